"""TFDS datasets as a `Source`: read into memory when small, streamed from their files in a seeded order when large."""

import math

import numpy as np
import tensorflow as tf

from simsiam_tf.data.source import AUTOTUNE, IN_MEMORY_MAX_BYTES, decode_encoded, map_ordered, records_source


def _to_rgb(image, label):
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
    channels = image.shape[-1]
    if channels == 1:
        image = tf.image.grayscale_to_rgb(image)
    elif channels == 4:
        image = image[..., :3]
    return image, tf.cast(label, tf.int64)


def _split_size(info, split):
    """(num_examples, num_bytes) that the dataset info records for a split; zeros when unknown."""
    try:
        split_info = info.splits[split]
        return int(split_info.num_examples or 0), int(split_info.num_bytes or 0)
    except (KeyError, ValueError, TypeError, AttributeError):
        return 0, 0


def _read_all(dataset, decode=None, int_labels=True):
    """Every element of a finite dataset of pairs as two NumPy arrays (the second as int64 with `int_labels`)."""
    if decode is not None:
        dataset = map_ordered(dataset, decode)
    firsts, seconds = [], []
    for first, second in dataset.batch(1024).as_numpy_iterator():
        firsts.append(first)
        seconds.append(second)
    if not firsts:
        return np.zeros([0]), np.zeros([0], np.int64)
    seconds = np.concatenate(seconds)
    return np.concatenate(firsts), seconds.astype(np.int64) if int_labels else seconds


def _identity_keys(info):
    """(image key, identity key) when the identity is not a class label; else None."""
    import tensorflow_datasets as tfds

    features = info.features
    supervised = tuple(info.supervised_keys or ())
    if len(supervised) == 2 and all(isinstance(k, str) for k in supervised):
        image_key = next((k for k in supervised if isinstance(features[k], tfds.features.Image)), None)
        label_key = next((k for k in supervised if k != image_key), None)
    else:
        image_key = next((k for k, f in features.items() if isinstance(f, tfds.features.Image)), None)
        label_key = "label" if "label" in features else None
    if image_key is None or label_key is None:
        return None
    if supervised and supervised[0] == image_key and isinstance(features[label_key], tfds.features.ClassLabel):
        return None
    return image_key, label_key


def _identity_source(raw, decode, image_shape, name, split):
    """A TFDS split whose class is a name (LFW's identities): each distinct name is a class, in sorted order."""
    images, identities = _read_all(raw, int_labels=False)
    if not len(images):
        raise ValueError(f"TFDS dataset {name!r} split {split!r} is empty")
    names, labels = np.unique(identities, return_inverse=True)
    class_names = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)
    return records_source((images, labels.astype(np.int64)), decode, len(class_names), image_shape, class_names, name)


def file_order(num_files, seed):
    """A permutation of range(num_files) drawn from the stateless `seed` [2] (int64 [num_files])."""
    return tf.random.experimental.index_shuffle(tf.range(num_files, dtype=tf.int64), seed, num_files - 1)


def shuffled_file_records(filenames, skips, takes, parse, cycle_length=16, block_length=16):
    """`epoch_records(seed)` of a `Source` whose records are TFRecord files (a TFDS split's file instructions).

    Each call reads `takes[i]` records after `skips[i]` from every file, the files in
    the order `file_order(len(filenames), seed)`, `cycle_length` files interleaved
    (in blocks of `block_length` records, deterministically, as TFDS reads
    `shuffle_files=True`), each record through `parse`.
    """
    filenames = tf.constant(list(filenames), tf.string)
    skips = tf.constant(list(skips), tf.int64)
    takes = tf.constant(list(takes), tf.int64)
    count = int(filenames.shape[0])
    if count < 1:
        raise ValueError("shuffled_file_records needs at least one file")

    def read(filename, skip, take):
        return tf.data.TFRecordDataset(filename).skip(skip).take(take)

    def epoch_records(seed):
        order = file_order(count, seed)
        files = tf.data.Dataset.from_tensor_slices(
            (tf.gather(filenames, order), tf.gather(skips, order), tf.gather(takes, order))
        )
        records = files.interleave(
            read,
            cycle_length=min(cycle_length, count),
            block_length=block_length,
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        return map_ordered(records, parse)

    return epoch_records


def _tfds_epoch_records(builder, split, decoders, to_pair):
    """`shuffled_file_records` of a TFDS split, or None when its files are not TFRecord or there is only one."""
    file_format = getattr(builder.info, "file_format", None)
    if file_format is not None and getattr(file_format, "value", str(file_format)) != "tfrecord":
        return None
    try:
        instructions = builder.info.splits[split].file_instructions
    except (KeyError, ValueError, AttributeError):
        return None
    if len(instructions) < 2:
        return None
    features = builder.info.features

    def parse(serialized):
        return to_pair(features.deserialize_example(serialized, decoders=decoders))

    return shuffled_file_records(
        [i.filename for i in instructions], [i.skip for i in instructions], [i.take for i in instructions], parse
    )


def tfds_source(name, split, data_dir, num_examples, download, identities=False):
    import tensorflow_datasets as tfds

    where = data_dir or "the default TFDS data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"unknown dataset {name!r}: use 'synthetic_scenes' or 'synthetic' (the built-in sets), 'folder' with "
            "data_dir pointing "
            "at an image folder, or a TensorFlow Datasets name such as 'cifar10' or 'imagenet2012' "
            "(https://www.tensorflow.org/datasets/catalog/overview)"
        ) from None
    if download:
        builder.download_and_prepare()
    info = builder.info
    identity_keys = _identity_keys(info) if identities else None
    if identity_keys is not None:
        image_key, label_key = identity_keys
    else:
        image_key, label_key = info.supervised_keys if info.supervised_keys else (None, None)
    if image_key is None:
        image_key = next((k for k, f in info.features.items() if isinstance(f, tfds.features.Image)), None)
    feature = info.features[image_key] if isinstance(image_key, str) and image_key in info.features else None
    if not isinstance(feature, tfds.features.Image):
        raise ValueError(f"TFDS dataset {name!r} has no image input feature; it cannot be used here")
    # Encoded images stay bytes until the pipeline decodes them: shuffling and skipping are cheap.
    encoded = feature.np_dtype == np.uint8
    decoders = {image_key: tfds.decode.SkipDecoding()} if encoded else None
    try:
        raw = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    except AssertionError as error:
        raise ValueError(
            f"TFDS dataset {name!r} (split {split!r}) is not prepared in {where}. Prepare it once on a "
            f"machine with network: `tfds build {name} --data_dir=DIR` (imagenet2012 and a few others need "
            "their archives in DIR/downloads/manual first), then pass that DIR as data_dir; or load with "
            f"download=True. TFDS said: {error}"
        ) from None
    except ValueError as error:
        raise ValueError(f"TFDS dataset {name!r}: cannot read split {split!r} from {where}: {error}") from None

    if label_key is not None:

        def to_pair(ex):
            return ex[image_key], ex[label_key]
    else:

        def to_pair(ex):
            return ex[image_key], tf.constant(-1, tf.int64)

    raw = map_ordered(raw, to_pair, parallel=False)
    if num_examples is not None:
        raw = raw.take(num_examples)
    h, w, _ = feature.shape
    image_shape = (int(h), int(w), 3) if h and w else None
    decode = decode_encoded if encoded else _to_rgb
    if identity_keys is not None:
        return _identity_source(raw, decode, image_shape, name, split)
    count = int(raw.cardinality())
    split_examples, split_bytes = _split_size(info, split)
    if count < 0:
        count = split_examples if num_examples is None else min(split_examples, num_examples)
    if count <= 0:
        raise ValueError(f"TFDS dataset {name!r} split {split!r} in {where} is empty")

    label_feature = info.features[label_key] if label_key is not None else None
    class_names = tuple(getattr(label_feature, "names", None) or ())
    num_classes = int(getattr(label_feature, "num_classes", 0) or 0)

    # Small splits are read into memory once: decoded when every image has the same
    # size (batches are then plain gathers), else still encoded.
    if image_shape is not None and count * h * w * 3 <= IN_MEMORY_MAX_BYTES:
        return records_source(_read_all(raw, decode), None, num_classes, image_shape, class_names, name)
    encoded_bytes = split_bytes * count / max(split_examples, count) if split_bytes else math.inf
    if encoded and encoded_bytes <= IN_MEMORY_MAX_BYTES:
        return records_source(_read_all(raw), decode, num_classes, image_shape, class_names, name)
    # A subset (num_examples) is the first images in the files' stored order; all of a split can vary it.
    epoch_records = None if num_examples is not None else _tfds_epoch_records(builder, split, decoders, to_pair)
    return records_source(
        raw, decode, num_classes, image_shape, class_names, name, num_examples=count, epoch_records=epoch_records
    )
