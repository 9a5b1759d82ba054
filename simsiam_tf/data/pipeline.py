"""The tf.data pipelines on a `Source`: pretraining views, evaluation and probe batches.

Pipelines are deterministic in (seed, step): the batch a run sees at step k does not
depend on whether the run started at step 0 or resumed at a later step. The helpers
for batch layout over replicas and for seed streams serve `pairs` and `tiles` too.
"""

import tensorflow as tf

from simsiam_tf import augment as augment_lib
from simsiam_tf.augment import jpeg, per_image
from simsiam_tf.data.source import AUTOTUNE, map_ordered

DEFAULT_SHUFFLE_BUFFER = 10_000

fold_in = tf.random.experimental.stateless_fold_in


def stream_seed(seed, stream):
    """A stateless seed [2] for one use (`stream`) of the user's seed."""
    return fold_in(tf.constant([seed, 0], tf.int64), stream)


def layout(global_batch_size, input_context):
    """(per-replica batch, replicas fed by this pipeline, index of its first replica)."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
    if input_context is None:
        return global_batch_size, 1, 0
    replicas = input_context.num_replicas_in_sync
    pipelines = input_context.num_input_pipelines
    if global_batch_size % replicas:
        raise ValueError(f"global_batch_size {global_batch_size} is not divisible by the {replicas} replicas")
    if replicas % pipelines:
        raise ValueError(f"{replicas} replicas cannot be split evenly over {pipelines} input pipelines")
    per_pipeline = replicas // pipelines
    return (
        input_context.get_per_replica_batch_size(global_batch_size),
        per_pipeline,
        input_context.input_pipeline_id * per_pipeline,
    )


def _chunk_indices(source, global_batch_size, batch, replicas_here, first_replica, seed):
    """Random-access order: chunk j -> the dataset indices of its replica's slice of the global batch."""
    n = source.num_examples
    steps_per_epoch = n // global_batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"the global batch ({global_batch_size}) is larger than the dataset ({n} examples, {source.name})"
        )
    order_seed = stream_seed(seed, 1)

    def indices(chunk):
        step = chunk // replicas_here
        replica = first_replica + chunk % replicas_here
        epoch = step // steps_per_epoch
        first = (step % steps_per_epoch) * global_batch_size + replica * batch
        positions = first + tf.range(batch, dtype=tf.int64)
        return chunk, tf.random.experimental.index_shuffle(positions, fold_in(order_seed, epoch), n - 1)

    return indices


_STREAM_GRAPH_SEED = 87654321
_NO_END = 2**62


def _stream(
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
    decode=None,
):
    """The batches this input pipeline feeds, as `(chunk, images, labels)`, deterministic in the seed.

    Chunk j of this pipeline is the batch of replica `first_replica + j % replicas_here`
    at step `j // replicas_here`. Random-access sources map every (step, replica) to
    its slice of the global batch of an index-shuffled epoch (an epoch is
    `num_examples // global_batch_size` steps), so the union over replicas is the
    single-device batch and any step can be produced without its predecessors.
    Streamed sources are sharded per input pipeline and shuffled per epoch with a seed
    of that epoch (stored in several files, `Source.epoch_records`, their files are
    read in an order of that epoch too, then shuffled); a resumed stream skips into its
    epoch. `element_fn(chunk, k, image)` runs per image before batching (for images of
    varying size). `decode` replaces the source's own (e.g. its `read`, to hand
    `element_fn` the encoded files).
    """
    decode = decode or source.decode
    start_chunk = start_step * replicas_here
    if source.random_access:
        indices = _chunk_indices(source, global_batch_size, batch, replicas_here, first_replica, seed)
        # A range, not Dataset.counter: the tf.data service splits a range by element (data/service.py).
        chunks = map_ordered(tf.data.Dataset.range(start_chunk, _NO_END), indices, parallel=False)
        if decode is None and element_fn is None:
            images, labels = source.records
            return map_ordered(chunks, lambda chunk, index: (chunk, tf.gather(images, index), tf.gather(labels, index)))
        elements = map_ordered(
            chunks, lambda chunk, index: (tf.fill([batch], chunk), tf.range(batch), index), False
        ).unbatch()
        records = source.records
        decode = decode or (lambda image, label: (image, label))
        elements = map_ordered(
            elements, lambda chunk, k, index: (chunk, k) + tuple(decode(*[tf.gather(r, index) for r in records]))
        )
    else:
        records = source.dataset if source.records is None else source.records
        decode = decode or (lambda image, label: (image, label))
        n = source.num_examples
        pipelines, pipeline = 1, 0
        if input_context is not None and input_context.num_input_pipelines > 1:
            pipelines, pipeline = input_context.num_input_pipelines, input_context.input_pipeline_id
            records = records.shard(pipelines, pipeline)
            n = (n - pipeline + pipelines - 1) // pipelines
        chunks_per_epoch = n // batch
        if chunks_per_epoch < 1:
            raise ValueError(f"the per-replica batch ({batch}) is larger than this input pipeline's {n} examples")
        order_seed = stream_seed(seed, 1)
        file_seed = stream_seed(seed, 4)
        buffer = max(1, min(n, buffer))

        def epoch_records(epoch):
            # A tensor op seed is combined with the graph-level seed, and TF fails on a
            # global seed of 0 (`tf.random.set_seed(0)`); pinning this function's graph
            # seed keeps the order a function of `seed` alone, whatever the caller set.
            tf.random.set_seed(_STREAM_GRAPH_SEED)
            shuffle_seed = tf.random.stateless_uniform(
                [], fold_in(order_seed, epoch), minval=None, maxval=None, dtype=tf.int64
            )
            epoch_order = records
            if source.epoch_records is not None:
                # Files in an order of this epoch (the same for every input pipeline), then this pipeline's shard.
                epoch_order = source.epoch_records(fold_in(file_seed, epoch))
                if pipelines > 1:
                    epoch_order = epoch_order.shard(pipelines, pipeline)
            return epoch_order.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False).take(
                chunks_per_epoch * batch
            )

        stream = tf.data.Dataset.counter(start_chunk // chunks_per_epoch).flat_map(epoch_records)
        stream = stream.skip((start_chunk % chunks_per_epoch) * batch)
        position = tf.data.Dataset.counter(start_chunk * batch)
        elements = map_ordered(
            tf.data.Dataset.zip((position, stream)), lambda e, record: (e // batch, e % batch) + tuple(decode(*record))
        )
    if element_fn is not None:
        elements = map_ordered(elements, lambda chunk, k, image, label: (chunk, element_fn(chunk, k, image), label))
    else:
        elements = map_ordered(elements, lambda chunk, k, image, label: (chunk, image, label), parallel=False)
    return map_ordered(
        elements.batch(batch, drop_remainder=True), lambda chunk, x, labels: (chunk[0], x, labels), False
    )


def _chunk_seed(base, replicas_here, first_replica):
    """Seed of chunk j: folds in its global step and replica, so replicas draw independently."""

    def seed_of(chunk):
        step = chunk // replicas_here
        replica = tf.cast(first_replica, tf.int64) + chunk % replicas_here
        return fold_in(fold_in(base, step), replica)

    return seed_of


# Views at least this large are cut from the image files one image at a time even when
# every image has one size: partial JPEG decodes and the per-image photometric ops cost
# less than decoding whole images and augmenting the batch (bench/RESULTS.md, 224 px).
PER_IMAGE_MIN_SIZE = 65


def _from_files(source, augment):
    """Whether the pretraining views are cut from `source`'s files one image at a time."""
    if source.read is None or not isinstance(augment, augment_lib.TwoViewAugment):
        return False
    if augment.affine.active:
        return False  # the per-file crops have no affine stage: decode whole images and use augment.crop
    return source.image_shape is None or augment.image_size >= PER_IMAGE_MIN_SIZE


def to_uint8(images):
    """float [0, 1] -> uint8, rounded to the nearest level."""
    return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0), tf.uint8)


def _split2(seed):
    return tf.unstack(tf.random.experimental.stateless_split(seed, 2))


def _pretrain_batches(source, global_batch_size, augment, seed, start_step, input_context, shuffle_buffer, on_host):
    """The one pretraining stream: `(view1, view2)` with `on_host`, else `((crops1, crops2), seeds)`.

    Without `on_host` the batches stop after the geometric stage: uint8 crops and the
    stateless seed `[2, 2]` of each view's photometric stage, which
    `TwoViewAugment.appearance` (or `augment.device.DeviceViews` in the train step)
    takes. For sources of one size those are the seeds the host path uses, so the
    device's views are the host's up to the rounding of the crops to uint8; crops cut
    from files draw their photometric ops per image on the host and per batch from
    these seeds on the device (the same distribution, other draws).
    """
    if start_step < 0:
        raise ValueError(f"start_step must be non-negative, got {start_step}")
    batch, replicas_here, first_replica = layout(global_batch_size, input_context)
    seed_of = _chunk_seed(stream_seed(seed, 2), replicas_here, first_replica)

    def photometric_seeds(chunk):
        return tf.stack(_split2(seed_of(chunk)))

    element_fn, decode = None, None
    if _from_files(source, augment):
        decode = source.read

        def element_fn(chunk, k, contents):
            crop_seed, first, second = tf.unstack(tf.random.experimental.stateless_split(fold_in(seed_of(chunk), k), 3))
            crops = jpeg.encoded_view_crops(
                contents,
                crop_seed,
                augment.image_size,
                augment.crop_scale,
                augment.crop_ratio,
                augment.flip_prob,
                dtype=tf.float32 if on_host else tf.uint8,
                stack=False,
                transposed=on_host,  # the photometric stage restores the layout (one transpose fewer)
            )
            if not on_host:
                return crops
            return tuple(
                per_image.appearance(crop, look, augment, transposed=True) for crop, look in zip(crops, (first, second))
            )

        def batches(chunk, views, labels):
            # Two batches, one per view: nothing is stacked and cut again.
            return tuple(views) if on_host else (tuple(views), photometric_seeds(chunk))

    elif source.image_shape is None:
        if not (hasattr(augment, "crop") and hasattr(augment, "appearance")):
            raise TypeError(
                f"{source.name!r} has images of varying size; its augment needs separate crop() and appearance() "
                "stages (use simsiam_tf.augment.TwoViewAugment)"
            )

        def element_fn(chunk, k, image):
            first, second = _split2(fold_in(seed_of(chunk), k))
            crops = tf.stack([augment.crop(image, first), augment.crop(image, second)])
            return crops if on_host else to_uint8(crops)

        def batches(chunk, crops, labels):
            if not on_host:
                return (crops[:, 0], crops[:, 1]), photometric_seeds(chunk)
            first, second = _split2(seed_of(chunk))
            return augment.appearance(crops[:, 0], first), augment.appearance(crops[:, 1], second)

    elif on_host:

        def batches(chunk, images, labels):
            return tuple(augment(images, seed_of(chunk)))

    else:

        def batches(chunk, images, labels):
            # TwoViewAugment.__call__ splits the batch seed into one per view, and each
            # view's seed into its crop seed and its appearance seed.
            (crop1, look1), (crop2, look2) = (_split2(s) for s in _split2(seed_of(chunk)))
            crops = to_uint8(augment.crop(images, crop1)), to_uint8(augment.crop(images, crop2))
            return crops, tf.stack([look1, look2])

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
        decode,
    )
    return map_ordered(stream, batches)


def make_pretrain_dataset(
    source,
    global_batch_size,
    augment,
    seed=0,
    start_step=0,
    input_context=None,
    shuffle_buffer=None,
    photometric_on_host=True,
):
    """Infinite stream of SimSiam batches `(view1, view2)`, each float32 `[b, S, S, 3]` in [0, 1].

    Reshuffled every epoch (drop-remainder epochs of `num_examples // global_batch_size`
    steps) and deterministic in (seed, step): starting at `start_step` gives the same
    batches as steps `start_step, ...` of a stream started at 0. Augmentation seeds
    derive from (seed, step, replica). With `input_context` (from
    `strategy.distribute_datasets_from_function`) each input pipeline yields the
    per-replica batches of its replicas; together the replicas see the global batch.

    Image folders (`Source.read`) whose sizes vary, and any folder at view sizes of
    `PER_IMAGE_MIN_SIZE` px and more, take a per-image path from the files: JPEGs get
    their crop windows from the header and one partial decode for both views, other
    formats one full decode; each window is cut from the original, resized
    (antialiased where it shrinks; to uint8 for `photometric_on_host=False`, else kept
    in float), then the photometric ops run per image
    (`simsiam_tf.augment.per_image.appearance`). Other sources of varying size decode each
    image and crop it with `augment.crop`; sources of one size augment whole batches.

    Args:
        source: a `Source` (`load_source`).
        global_batch_size: images per step over all replicas.
        augment: `augment(images, seed) -> (view1, view2)` on a batch, e.g. a
            `TwoViewAugment`; sources whose image sizes vary need its `crop` and
            `appearance` stages (the crop runs per image before batching).
        shuffle_buffer: buffer of streamed (large TFDS) sources; default
            min(num_examples, 10000). Random-access sources shuffle exactly.
        photometric_on_host: False stops after the geometric stage (random resized crop
            and flip) and yields uint8 `[b, S, S, 3]` views, for a train step that runs the
            colour jitter, grayscale and blur itself: `make_pretrain_crops_dataset`'s crops,
            without the seeds; the augment needs a separate `crop` stage.
        seed: the stream's seed: the order and every augmentation draw derive from it.
        start_step: the first step to yield (a resumed run's step).
        input_context: a `tf.distribute.InputContext`, or None for one pipeline.

    Returns:
        An endless `tf.data.Dataset` of `(view1, view2)` batches (per replica with
        `input_context`); `model.fit` takes it with `steps_per_epoch`.

    Raises:
        TypeError: `photometric_on_host=False` with an augment that has no separate
            `crop` stage.

    Example:
        ```python
        import simsiam_tf as st

        source = st.load_source("synthetic", image_size=32, num_examples=512)
        views = st.make_pretrain_dataset(source, 64, st.TwoViewAugment(image_size=32))
        view1, view2 = next(iter(views))  # float32 [64, 32, 32, 3] each
        ```
    """
    if not photometric_on_host and not hasattr(augment, "crop"):
        raise TypeError(
            "photometric_on_host=False needs an augment with a separate crop() stage "
            "(use simsiam_tf.augment.TwoViewAugment)"
        )
    args = (source, global_batch_size, augment, seed, start_step, input_context, shuffle_buffer)
    if photometric_on_host:
        return _pretrain_batches(*args, on_host=True).prefetch(AUTOTUNE)
    crops = _pretrain_batches(*args, on_host=False)
    return map_ordered(crops, lambda views, seeds: views, parallel=False).prefetch(AUTOTUNE)


def make_pretrain_crops_dataset(
    source, global_batch_size, augment, seed=0, start_step=0, input_context=None, shuffle_buffer=None
):
    """Infinite stream of `((crops1, crops2), seeds)`: uint8 `[b, S, S, 3]` twice and int64 `[2, 2]`.

    The host half of `--augment_on=device`: the images, crop windows and flips of step
    k are those of `make_pretrain_dataset` with the same arguments; `seeds` are the
    stateless seeds of the two views' photometric stage, which
    `simsiam_tf.augment.device.DeviceViews(augment)` runs inside the train step. For
    sources of one size the result is that pipeline's views up to the rounding of the
    crops to uint8; for crops cut from image files, views of the same distribution.
    Deterministic in (seed, step) in the same way.

    augment: a `TwoViewAugment` (its `crop` stage runs here, `appearance` on the device).
    """
    if not (hasattr(augment, "crop") and hasattr(augment, "appearance")):
        raise TypeError("augment_on=device needs an augment with crop() and appearance() stages (a TwoViewAugment)")
    stream = _pretrain_batches(
        source, global_batch_size, augment, seed, start_step, input_context, shuffle_buffer, on_host=False
    )
    return stream.prefetch(AUTOTUNE)


def make_eval_dataset(source, batch_size, image_size, center_crop=False):
    """Finite, ordered batches `(images float32 [b, S, S, 3] in [0, 1], labels int64 [b])`.

    `center_crop=True`: resize + centre crop (ImageNet protocol); False: plain resize
    (CIFAR-size protocol). The last batch may be smaller.
    """

    def preprocess(images, labels):
        return augment_lib.eval_preprocess(images, image_size, center_crop), labels

    if source.image_shape is None:
        dataset = map_ordered(source.dataset, preprocess).batch(batch_size)
    else:
        dataset = map_ordered(source.dataset.batch(batch_size), preprocess)
    return dataset.prefetch(AUTOTUNE)


def make_probe_train_dataset(
    source, batch_size, image_size, seed=0, augment=True, crop_scale=(0.08, 1.0), center_crop=False, flip_prob=0.5
):
    """Shuffled, repeated `(images, labels)` batches for linear-probe training.

    With `augment`, random resized crop (`crop_scale`) + horizontal flip with probability
    `flip_prob` per image; without, the evaluation preprocessing (`center_crop` as in
    `make_eval_dataset`).
    """
    if not source.labelled:
        raise ValueError(f"the linear probe needs labels, but {source.name!r} is unlabelled")
    seed_of = _chunk_seed(stream_seed(seed, 3), 1, 0)

    def transform(images, chunk_seed):
        if augment:
            return augment_lib.probe_augment(images, chunk_seed, image_size, crop_scale, flip_prob=flip_prob)
        return augment_lib.eval_preprocess(images, image_size, center_crop)

    element_fn = None
    if source.image_shape is None:

        def element_fn(chunk, k, image):
            return transform(image, fold_in(seed_of(chunk), k))

        def batch_fn(chunk, images, labels):
            return images, labels

    else:

        def batch_fn(chunk, images, labels):
            return transform(images, seed_of(chunk)), labels

    stream = _stream(source, batch_size, batch_size, 1, 0, seed, 0, None, element_fn, DEFAULT_SHUFFLE_BUFFER)
    return map_ordered(stream, batch_fn).prefetch(AUTOTUNE)
