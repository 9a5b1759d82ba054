"""SimSiam view pairs from a user's own images, for `model.fit(ds, epochs=N)`.

`two_view_dataset` takes what a Keras user has at hand (a `tf.data.Dataset` of
images, e.g. from `keras.utils.image_dataset_from_directory`, a NumPy array, or a
list of image files) and returns a finite dataset of `(view1, view2)` batches, one
epoch per iteration. `fit` given a dataset without `steps_per_epoch` iterates it anew
every epoch: Keras 3.15 calls `iter()` at the start of each epoch (and, when the
dataset's cardinality tells it the number of steps, once more at each epoch's end, for
an iterator it then drops unused).

Randomness: every iteration first draws an epoch key from
`tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`, a stream that gives
another number at each iteration of the same dataset object and the same numbers for
a dataset built again with the same seed. Everything else is stateless and keyed by
it: the epoch's order, and each step's augmentation seed (the key with the step folded
in), under which `TwoViewAugment` draws every image's crop, flip and colours on its
own. As every seeded TensorFlow op, the stream also depends on TensorFlow's global
seed (`keras.utils.set_random_seed`) when one is set.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from simsiam_tf import augment as augment_lib
from simsiam_tf.augment import image_range
from simsiam_tf.data.source import AUTOTUNE, decode_encoded, map_ordered

fold_in = tf.random.experimental.stateless_fold_in

AUGMENT_OPTIONS = tuple(f.name for f in dataclasses.fields(augment_lib.TwoViewAugment) if f.name != "image_size")


def two_view_dataset(
    images,
    batch_size,
    image_size=None,
    seed=0,
    *,
    scale=None,
    shuffle=True,
    drop_remainder=True,
    **augment_options,
):
    """A finite dataset of SimSiam batches `(view1, view2)`, each float32 `[batch_size, S, S, 3]` in [0, 1].

    Args:
      images: one of
        - a `tf.data.Dataset` of images, unbatched `[H, W, C]` or batched
          `[B, H, W, C]`, or of `(images, labels)` tuples as
          `keras.utils.image_dataset_from_directory` yields (the labels are dropped);
          taken in its own order (that function reshuffles every epoch itself);
        - a NumPy array `[N, H, W, C]` or `[N, H, W]` (grayscale);
        - a list of image file paths (PNG, JPEG, BMP, GIF: the first frame).
        C is 1 (repeated to 3 channels) or 3. Values: uint8 in [0, 255] or float in
        [0, 1]; float values outside [0, 1] raise an error naming the fix (see
        `simsiam_tf.augment.image_range`), unless `scale` brings them there.
      batch_size: images per batch.
      image_size: side S of the square views; None takes the images' own side when
        they are square and all of one size.
      seed: the draws (order and augmentation) repeat for the same seed; they differ
        per image, per step and per epoch.
      scale: multiply the images by this first, as `keras.layers.Rescaling(scale)`:
        `scale=1/255` for float images in [0, 255]. uint8 images need none.
      shuffle: arrays and file lists are taken in a new order every epoch (a
        permutation drawn from the epoch's key); False keeps their order.
      drop_remainder: True (default): an epoch is `floor(N / batch_size)` full batches,
        as the reference's `drop_last=True` (a batch of one image would make the
        BatchNorm statistics of the projector degenerate). False keeps the last,
        smaller batch: `ceil(N / batch_size)` steps.
      **augment_options: the recipe, as `TwoViewAugment`'s fields: `crop_scale`,
        `crop_ratio`, `jitter_strength`, `jitter_prob`, `grayscale_prob`,
        `blur_prob`, `blur_sigma`, `flip_prob` (the CLI's --crop_scale, --jitter_strength,
        ... of `config.AugmentConfig`). Defaults: the paper's ImageNet recipe
        (`TwoViewAugment`'s; pass `blur_prob=0.0` for its CIFAR recipe).

    Returns:
      A `tf.data.Dataset` whose every iteration is one epoch; its cardinality (`len()`)
      is the number of steps per epoch when the number of images is known: arrays,
      files, datasets of known cardinality, and `image_dataset_from_directory`'s (from
      its `file_paths`). A batched dataset of unknown length (e.g. after `.filter`)
      leaves it unknown; Keras then learns the epoch's length at its end (seen with
      SimSiam's compiled step, Keras 3.15 / TF 2.21: that end adds one to the
      optimizer's step count without a batch, so the count, and a schedule read from
      it, run one step ahead per such epoch).
    """
    unknown = sorted(set(augment_options) - set(AUGMENT_OPTIONS))
    if unknown:
        raise TypeError(f"unknown augmentation option(s) {unknown}; the options are {list(AUGMENT_OPTIONS)}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    batch_size = int(batch_size)
    examples, count, shuffle_fn, table = _image_examples(images)
    shape = examples.element_spec.shape
    if image_size is None:
        if shape[0] is None or shape[0] != shape[1]:
            raise ValueError(
                f"image_size=None takes the images' own side, but they are {_describe(shape)}: "
                "give image_size (the side of the square views)"
            )
        image_size = int(shape[0])
    augment = augment_lib.TwoViewAugment(image_size=image_size, **augment_options)
    if count is not None:
        steps = count // batch_size if drop_remainder else -(-count // batch_size)
        if steps < 1:
            raise ValueError(
                f"batch_size {batch_size} is larger than the {count} images: lower batch_size, or pass "
                "drop_remainder=False to train on one smaller batch per epoch"
            )
    to_range = _scaled(scale)
    one_size = shape[0] is not None and shape[1] is not None

    def epoch(key):
        # Only the order lives in here: the augmentation maps below are instantiated once
        # per iteration, not once more inside every epoch's inner dataset.
        ordered = shuffle_fn(_order_key(seed, key)) if shuffle and shuffle_fn is not None else examples
        return map_ordered(ordered, lambda image: (key, to_range(image)), False)

    def epoch_batches(key):
        # An array is cut into batches by index, a gather per batch instead of one map per image.
        order = tf.range(count, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.index_shuffle(order, _order_key(seed, key), count - 1)
        starts = tf.data.Dataset.range(0, steps * batch_size, batch_size)

        def batch_at(start):
            images = to_range(tf.gather(table, order[start : start + batch_size]))
            if drop_remainder:
                images = tf.ensure_shape(images, [batch_size] + table.shape[1:].as_list())
            return tf.fill([tf.shape(images)[0]], key), images

        return map_ordered(starts, batch_at, False)

    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    elements = keys.flat_map(epoch)
    if one_size:
        if table is not None:
            batches = keys.flat_map(epoch_batches).enumerate()
        else:
            batches = elements.batch(batch_size, drop_remainder=drop_remainder).enumerate()

        def views(step, batch):
            keys, images = batch
            return tuple(augment(images, fold_in(_step_key(seed, keys[0]), step)))

        dataset = map_ordered(batches, views)
    else:

        def crops(index, element):
            key, image = element
            first, second = _split2(fold_in(_crop_key(seed, key), index))
            return key, augment.crop(image, first), augment.crop(image, second)

        cropped = map_ordered(elements.enumerate(), crops).batch(batch_size, drop_remainder=drop_remainder)

        def looks(step, batch):
            keys, views1, views2 = batch
            first, second = _split2(fold_in(_step_key(seed, keys[0]), step))
            return augment.appearance(views1, first), augment.appearance(views2, second)

        dataset = map_ordered(cropped.enumerate(), looks)
    if count is not None:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset.prefetch(AUTOTUNE)


def _epoch_seed(seed, key, stream):
    return fold_in(tf.stack([tf.constant(seed, tf.int64), tf.cast(key, tf.int64)]), stream)


def _order_key(seed, key):
    return _epoch_seed(seed, key, 0)


def _crop_key(seed, key):
    return _epoch_seed(seed, key, 1)


def _step_key(seed, key):
    return _epoch_seed(seed, key, 2)


def _split2(seed):
    return tf.unstack(tf.random.experimental.stateless_split(seed, 2))


def _describe(shape):
    return f"of size {shape[0]} x {shape[1]}" if shape[0] is not None and shape[1] is not None else "of varying size"


def _scaled(scale):
    """The per-image map to uint8 or float32 in [0, 1] (checked), after `scale`."""

    def fn(image):
        if scale is not None:
            image = tf.cast(image, tf.float32) * scale
        if image.dtype == tf.uint8:
            return image
        if image.dtype.is_integer:
            raise TypeError(
                f"integer images must be uint8 in [0, 255], got {image.dtype.name}: cast them "
                "(x.astype('uint8')) or pass scale=1/255"
            )
        return image_range.check_unit_range(tf.cast(image, tf.float32))

    return fn


def _rgb(image):
    """`[H, W]`, `[H, W, 1]` or `[H, W, 3]` -> `[H, W, 3]`."""
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    channels = image.shape[-1]
    if channels == 1:
        return tf.tile(image, [1, 1, 3])
    if channels != 3:
        raise ValueError(
            f"images must have 1 or 3 channels, got {channels}: drop an alpha channel with x[..., :3]"
            if channels == 4
            else f"images must have 1 or 3 channels, got {channels}"
        )
    return image


def _image_examples(images):
    """(unbatched dataset of `[H, W, 3]` images, their number or None, order_key -> shuffled dataset or None,
    the images as one tensor `[N, H, W, 3]` when they come as an array, else None)."""
    if isinstance(images, tf.data.Dataset):
        return _from_dataset(images) + (None,)
    if isinstance(images, (list, tuple)) and images and all(isinstance(p, (str, bytes, os.PathLike)) for p in images):
        return _from_files([os.fspath(p) for p in images]) + (None,)
    if isinstance(images, (list, tuple)) and not images:
        raise ValueError("no images: the list is empty")
    if isinstance(images, (np.ndarray, tf.Tensor)) or hasattr(images, "__array__"):
        return _from_array(np.asarray(images))
    raise TypeError(
        f"images must be a tf.data.Dataset, a NumPy array [N, H, W, C] or a list of image file paths, "
        f"got {type(images).__name__}"
    )


def _permuted(count, fetch):
    """order_key -> the `count` items in an order of that key (`fetch(index)` reads one)."""

    def shuffled(order_key):
        indices = tf.data.Dataset.range(count)
        return map_ordered(
            indices, lambda i: fetch(tf.random.experimental.index_shuffle(i, order_key, count - 1)), False
        )

    return shuffled


def _from_array(array):
    if array.ndim not in (3, 4):
        raise ValueError(f"an image array must be [N, H, W, C] or [N, H, W] (grayscale), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("no images: the array is empty")
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.shape[-1] not in (1, 3):
        _rgb(tf.zeros([1, 1, array.shape[-1]]))  # raises the channel message
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    images = tf.constant(array)
    count = int(array.shape[0])
    examples = map_ordered(tf.data.Dataset.range(count), lambda i: images[i], False)
    return examples, count, None, images


def _from_files(paths):
    table = tf.constant(paths)
    count = len(paths)

    def read(path):
        return decode_encoded(tf.io.read_file(path), -1)[0]

    examples = map_ordered(tf.data.Dataset.from_tensor_slices(table), read)
    return examples, count, _permuted(count, lambda i: read(table[i]))


def _from_dataset(dataset):
    # keras.utils.image_dataset_from_directory lists its files: their number is the
    # number of images, which unbatching would otherwise hide.
    file_paths = getattr(dataset, "file_paths", None)
    spec = dataset.element_spec
    if isinstance(spec, tuple):
        if not spec or not isinstance(spec[0], tf.TensorSpec):
            raise TypeError(f"a dataset of images or of (images, labels) tuples is needed, got elements {spec}")
        dataset = dataset.map(lambda *parts: parts[0])
        spec = spec[0]
    if not isinstance(spec, tf.TensorSpec):
        raise TypeError(f"a dataset of images or of (images, labels) tuples is needed, got elements {spec}")
    rank = spec.shape.rank
    if rank == 4:
        dataset = dataset.unbatch()
    elif rank not in (2, 3):
        raise ValueError(
            f"dataset elements must be images [H, W, C] or [H, W], or batches [B, H, W, C], got shape {spec.shape}"
        )
    dataset = dataset.map(_rgb)
    cardinality = int(dataset.cardinality())
    count = cardinality if cardinality >= 0 else None
    if count is None and isinstance(file_paths, (list, tuple)):
        count = len(file_paths)
    return dataset, count, None
