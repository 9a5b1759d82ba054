"""The host half of `--augment_on=device`: two uint8 crops per image and the seeds of their photometric stage.

`make_pretrain_crops_dataset` is `make_pretrain_dataset` stopped after the geometric
stage (`TwoViewAugment.crop`: random resized crop and flip), with the same stream of
images and the same seeds: its batches `((crops1, crops2), seeds)` carry uint8 crops
(a quarter of the float32 bytes to ship to the device) and the stateless seed of each
view's photometric stage, which `simsiam_tf.device_augment.DeviceViews` runs inside
the train step.
"""

import tensorflow as tf

from simsiam_tf.data.pipeline import DEFAULT_SHUFFLE_BUFFER, _chunk_seed, _stream, layout, stream_seed
from simsiam_tf.data.sources import AUTOTUNE, map_ordered

fold_in = tf.random.experimental.stateless_fold_in


def _split(seed):
    return tf.unstack(tf.random.experimental.stateless_split(seed, 2))


def to_uint8(images):
    """float [0, 1] -> uint8, rounded to the nearest level."""
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)


def make_pretrain_crops_dataset(
    source, global_batch_size, augment, seed=0, start_step=0, input_context=None, shuffle_buffer=None
):
    """Infinite stream of `((crops1, crops2), seeds)`: uint8 `[b, S, S, 3]` twice and int64 `[2, 2]`.

    The images, crop windows and seeds of step k are those of `make_pretrain_dataset`
    with the same arguments, so `DeviceViews(augment)` turns a batch into that
    pipeline's views (up to the rounding of the crops to uint8); deterministic in
    (seed, step) in the same way.

    augment: a `TwoViewAugment` (its `crop` stage runs here, `appearance` on the device).
    """
    if start_step < 0:
        raise ValueError(f"start_step must be non-negative, got {start_step}")
    if not (hasattr(augment, "crop") and hasattr(augment, "appearance")):
        raise TypeError("augment_on=device needs an augment with crop() and appearance() stages (a TwoViewAugment)")
    batch, replicas_here, first_replica = layout(global_batch_size, input_context)
    seed_of = _chunk_seed(stream_seed(seed, 2), replicas_here, first_replica)

    element_fn = None
    if source.image_shape is None:

        def element_fn(chunk, k, image):
            first, second = _split(fold_in(seed_of(chunk), k))
            return to_uint8(tf.stack([augment.crop(image, first), augment.crop(image, second)]))

        def crops(chunk, pairs, labels):
            return (pairs[:, 0], pairs[:, 1]), tf.stack(_split(seed_of(chunk)))

    else:

        def crops(chunk, images, labels):
            # TwoViewAugment.__call__ splits the batch seed into one per view, and each
            # view's seed into its crop seed and its appearance seed.
            (crop1, look1), (crop2, look2) = (_split(s) for s in _split(seed_of(chunk)))
            return (to_uint8(augment.crop(images, crop1)), to_uint8(augment.crop(images, crop2))), tf.stack(
                [look1, look2]
            )

    buffer = DEFAULT_SHUFFLE_BUFFER if shuffle_buffer is None else shuffle_buffer
    stream = _stream(
        source,
        global_batch_size,
        batch,
        replicas_here,
        first_replica,
        seed,
        start_step,
        input_context,
        element_fn,
        buffer,
    )
    return map_ordered(stream, crops).prefetch(AUTOTUNE)
