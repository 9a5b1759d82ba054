"""Image sources (synthetic, TFDS, image folders) and the tf.data pipelines built on them.

A `Source` is a dataset of `(image uint8 [H, W, 3], label int64)` plus what the
pipelines need to know about it. Pipelines are deterministic in (seed, step): the
batch a run sees at step k does not depend on whether the run started at step 0 or
resumed at a later step.
"""
import dataclasses
import math
import os
from typing import Any, Callable, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from simsiam_tf import augment as augment_lib

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SYNTHETIC_PATTERNS = (
    "horizontal_stripes", "vertical_stripes", "diagonal_stripes", "checkerboard", "dots",
    "grid", "rings", "crosses", "zigzag", "target",
)
SYNTHETIC_HUES = (0.5, 0.7)
SYNTHETIC_SPLITS = {"train": (0, 5000), "test": (1, 1000)}
# TFDS splits whose encoded images fit in this many bytes are read into memory once,
# which gives them exact per-epoch shuffling; larger ones stream from their files.
IN_MEMORY_MAX_BYTES = 1 << 30
DEFAULT_SHUFFLE_BUFFER = 10_000

_fold_in = tf.random.experimental.stateless_fold_in


def _map(dataset, fn, parallel=True):
    """`dataset.map` without AutoGraph (the functions have no tensor-dependent Python
    control flow, and converting the augmentation graph is slow), order kept."""
    fn = tf.autograph.experimental.do_not_convert(fn)
    if parallel:
        return dataset.map(fn, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.map(fn)


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """A set of images and labels, and what the pipelines need to know about it.

    dataset: `(image uint8 [H, W, 3], label int64)` in a fixed order; label -1 when
        the source is unlabelled.
    num_examples: number of elements of `dataset`.
    num_classes: 0 when unlabelled.
    image_shape: `(H, W, 3)` when every image has it, None when sizes vary.
    class_names: one name per class (empty when unlabelled).
    name: what the user asked for ("synthetic", a TFDS name, "folder").
    records / decode: the same elements before decoding, for the training pipelines.
        `records` is either a tuple of arrays indexed along their first axis (random
        access: the pipelines shuffle exactly, per epoch) or a `tf.data.Dataset`
        (streamed; shuffled through a buffer). `decode(*record)` gives
        `(image, label)`; None means the records already are `(images, labels)`.
    """

    dataset: tf.data.Dataset
    num_examples: int
    num_classes: int
    image_shape: Optional[Tuple[int, int, int]]
    class_names: Tuple[str, ...]
    name: str
    records: Any = None
    decode: Optional[Callable] = None

    @property
    def labelled(self):
        return self.num_classes > 0

    @property
    def random_access(self):
        return isinstance(self.records, tuple)


def _table_source(records, decode, num_classes, image_shape, class_names, name):
    records = tuple(tf.convert_to_tensor(r) for r in records)
    dataset = tf.data.Dataset.from_tensor_slices(records)
    if decode is not None:
        dataset = _map(dataset, decode)
    return Source(
        dataset=dataset,
        num_examples=int(records[0].shape[0]),
        num_classes=num_classes,
        image_shape=image_shape,
        class_names=tuple(class_names),
        name=name,
        records=records,
        decode=decode,
    )


# --------------------------------------------------------------------------- synthetic


def _box(x, y, half_w, half_h):
    """Signed distance to an axis-aligned box centred at the origin."""
    qx = np.abs(x) - half_w
    qy = np.abs(y) - half_h
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _centred_fraction(t):
    """Position within the current period, in [-0.5, 0.5)."""
    return t - np.floor(t) - 0.5


def _pattern_sdf(index, u, v, diagonal_sign, radius):
    """Signed distance (in periods; negative on the pattern) to synthetic pattern `index`.

    (u, v): lattice coordinates, one unit per period; `radius`: distance to the
    image's own centre, in periods, for the concentric `target`.
    """
    name = SYNTHETIC_PATTERNS[index]
    du, dv = _centred_fraction(u), _centred_fraction(v)
    if name == "horizontal_stripes":
        return np.abs(dv) - 0.2
    if name == "vertical_stripes":
        return np.abs(du) - 0.2
    if name == "diagonal_stripes":
        return np.abs(_centred_fraction((u + diagonal_sign * v) / 2.0)) * np.sqrt(2.0) - 0.2
    if name == "checkerboard":
        return -np.sign(du * dv) * np.minimum(np.abs(du), np.abs(dv))
    if name == "dots":
        return np.hypot(du, dv) - 0.28
    if name == "grid":
        return np.minimum(0.5 - np.abs(du), 0.5 - np.abs(dv)) - 0.1
    if name == "rings":
        return np.abs(np.hypot(du, dv) - 0.3) - 0.09
    if name == "crosses":
        return np.minimum(_box(du, dv, 0.38, 0.1), _box(du, dv, 0.1, 0.38))
    if name == "zigzag":
        triangle_wave = np.abs(du) * 2.0 - 0.5
        return np.abs(_centred_fraction(v + 0.5 * triangle_wave)) * 0.8 - 0.15
    # target: concentric rings around a point of the image
    return np.abs(_centred_fraction(radius)) - 0.2


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB, all in [0, 1]; returns [..., 3]."""
    k = (np.array([5.0, 3.0, 1.0], np.float32) + h[..., None] * 6.0) % 6.0
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _palette_colours(rng, light):
    """One colour per image from the set's narrow palette; light (HSV value 0.65-0.85) or dark (0.15-0.35)."""
    n = len(light)
    value = np.where(light, rng.uniform(0.65, 0.85, n), rng.uniform(0.15, 0.35, n)).astype(np.float32)
    hue = rng.uniform(*SYNTHETIC_HUES, n).astype(np.float32)
    return _hsv_to_rgb(hue, rng.uniform(0.2, 0.5, n).astype(np.float32), value)


def make_synthetic(num_examples, image_size=32, num_classes=10, seed=0):
    """A deterministic labelled image set whose class is a periodic pattern and nothing else.

    Each image is filled with one of `num_classes` patterns (horizontal, vertical or
    diagonal stripes, checkerboard, dots, grid, rings, crosses, zigzag, concentric
    target); classes are balanced. Every image draws its own period (a fifth to a
    third of the image), phase, slight tilt, diagonal direction, target centre and
    polarity (light pattern on dark or the reverse), with pixel noise.

    Colours come from a narrow blue-grey palette whose spread (hue 0.5-0.7, value
    +-0.1) lies within what SimSiam's colour jitter (hue +-0.1, brightness x0.6-1.4)
    does to a view anyway, so colour tells neither the class nor the image: what two
    augmented views of an image share, and other images do not, is the pattern. A
    random conv net sees the patterns too, but mixed with period, phase and polarity,
    which SimSiam learns to ignore (a crop rescales the period and shifts the phase).

    Returns `(images uint8 [N, S, S, 3], labels int64 [N])`.
    """
    if not 2 <= num_classes <= len(SYNTHETIC_PATTERNS):
        raise ValueError(f"num_classes must be between 2 and {len(SYNTHETIC_PATTERNS)}, got {num_classes}")
    if num_examples < 0:
        raise ValueError(f"num_examples must be non-negative, got {num_examples}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    rng = np.random.default_rng(seed)
    n, size = int(num_examples), int(image_size)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)

    period = (rng.uniform(0.2, 0.32, n) * size).astype(np.float32)
    tilt = rng.uniform(-0.15, 0.15, n)
    cos, sin = np.cos(tilt).astype(np.float32), np.sin(tilt).astype(np.float32)
    phase = rng.random((2, n), dtype=np.float32)
    diagonal_sign = np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32)
    target_centre = (rng.uniform(0.2, 0.8, (2, n)) * size).astype(np.float32)
    light_pattern = rng.random(n) < 0.5
    background = _palette_colours(rng, ~light_pattern)
    foreground = _palette_colours(rng, light_pattern)

    grid = np.arange(size, dtype=np.float32) + 0.5
    x, y = grid[None, None, :], grid[None, :, None]
    alpha = np.empty((n, size, size), np.float32)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if not len(idx):
            continue
        p = period[idx, None, None]
        co, si = cos[idx, None, None], sin[idx, None, None]
        u = (co * (x - size / 2) + si * (y - size / 2)) / p + phase[0, idx, None, None]
        v = (co * (y - size / 2) - si * (x - size / 2)) / p + phase[1, idx, None, None]
        radius = np.hypot(x - target_centre[0, idx, None, None], y - target_centre[1, idx, None, None]) / p
        # Signed distance in pixels -> antialiased coverage.
        alpha[idx] = np.clip(0.5 - _pattern_sdf(c, u, v, diagonal_sign[idx, None, None], radius) * p, 0.0, 1.0)
    images = background[:, None, None, :] + alpha[..., None] * (foreground - background)[:, None, None, :]
    images *= 255.0
    images += rng.standard_normal(images.shape, dtype=np.float32) * (0.03 * 255.0)
    np.clip(np.rint(images, out=images), 0, 255, out=images)
    return images.astype(np.uint8), labels


def _synthetic_source(split, image_size, seed, num_examples):
    if split not in SYNTHETIC_SPLITS:
        raise ValueError(f"the synthetic dataset has splits {sorted(SYNTHETIC_SPLITS)}, got split={split!r}")
    stream, default_size = SYNTHETIC_SPLITS[split]
    n = default_size if num_examples is None else num_examples
    split_seed = np.random.SeedSequence([seed, stream])
    images, labels = make_synthetic(n, image_size=image_size, seed=split_seed)
    return _table_source(
        (images, labels), None, len(SYNTHETIC_PATTERNS), (image_size, image_size, 3), SYNTHETIC_PATTERNS, "synthetic"
    )


# --------------------------------------------------------------------------- TFDS


def _decode_encoded(encoded, label):
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image, tf.cast(label, tf.int64)


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


def _read_all(dataset, decode=None):
    """Every element of a finite dataset of pairs as two NumPy arrays."""
    if decode is not None:
        dataset = _map(dataset, decode)
    firsts, seconds = [], []
    for first, second in dataset.batch(1024).as_numpy_iterator():
        firsts.append(first)
        seconds.append(second)
    return np.concatenate(firsts), np.concatenate(seconds).astype(np.int64)


def _tfds_source(name, split, data_dir, num_examples, download):
    import tensorflow_datasets as tfds

    where = data_dir or "the default TFDS data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"unknown dataset {name!r}: use 'synthetic' (the built-in set), 'folder' with data_dir pointing "
            "at an image folder, or a TensorFlow Datasets name such as 'cifar10' or 'imagenet2012' "
            "(https://www.tensorflow.org/datasets/catalog/overview)"
        ) from None
    if download:
        builder.download_and_prepare()
    info = builder.info
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
        raw = _map(raw, lambda ex: (ex[image_key], ex[label_key]), parallel=False)
    else:
        raw = _map(raw, lambda ex: (ex[image_key], tf.constant(-1, tf.int64)), parallel=False)
    if num_examples is not None:
        raw = raw.take(num_examples)
    count = int(raw.cardinality())
    split_examples, split_bytes = _split_size(info, split)
    if count < 0:
        count = split_examples if num_examples is None else min(split_examples, num_examples)
    if count <= 0:
        raise ValueError(f"TFDS dataset {name!r} split {split!r} in {where} is empty")

    label_feature = info.features[label_key] if label_key is not None else None
    class_names = tuple(getattr(label_feature, "names", None) or ())
    num_classes = int(getattr(label_feature, "num_classes", 0) or 0)
    h, w, _ = feature.shape
    image_shape = (int(h), int(w), 3) if h and w else None
    decode = _decode_encoded if encoded else _to_rgb

    # Small splits are read into memory once: decoded when every image has the same
    # size (batches are then plain gathers), else still encoded.
    if image_shape is not None and count * h * w * 3 <= IN_MEMORY_MAX_BYTES:
        return _table_source(_read_all(raw, decode), None, num_classes, image_shape, class_names, name)
    encoded_bytes = split_bytes * count / max(split_examples, count) if split_bytes else math.inf
    if encoded and encoded_bytes <= IN_MEMORY_MAX_BYTES:
        return _table_source(_read_all(raw), decode, num_classes, image_shape, class_names, name)
    return Source(
        dataset=_map(raw, decode),
        num_examples=count,
        num_classes=num_classes,
        image_shape=image_shape,
        class_names=class_names,
        name=name,
        records=raw,
        decode=decode,
    )


# --------------------------------------------------------------------------- image folders


def _image_files(folder, recursive):
    found = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    else:
        found = [
            os.path.join(folder, f)
            for f in os.listdir(folder)
            if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
        ]
    return sorted(found)


def _read_image(path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _find_corrupt(paths):
    """Decodes every file once, in parallel; returns (indices that fail, shapes of the others)."""
    scan = tf.data.Dataset.from_tensor_slices((paths, tf.range(len(paths))))
    scan = _map(scan, lambda p, i: (i, tf.shape(_read_image(p))))
    scan = scan.ignore_errors()
    good, shapes = [], []
    for index, shape in scan.as_numpy_iterator():
        good.append(index)
        shapes.append(tuple(shape))
    bad = sorted(set(range(len(paths))) - set(good))
    return bad, shapes


def _folder_source(data_dir, split, image_size, seed, num_examples, on_corrupt):
    if not data_dir:
        raise ValueError("dataset='folder' needs data_dir: a folder with one sub-folder of images per class, or a flat folder of images")
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir!r} does not exist or is not a folder (dataset='folder')")
    root = os.path.join(data_dir, split) if split and os.path.isdir(os.path.join(data_dir, split)) else data_dir
    class_dirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    class_files = [(d, _image_files(os.path.join(root, d), recursive=True)) for d in class_dirs]
    class_files = [(d, files) for d, files in class_files if files]
    loose = _image_files(root, recursive=False)
    if class_files:
        if loose:
            logging.warning("%s: %d image(s) outside the class sub-folders are ignored", root, len(loose))
        class_names = tuple(d for d, _ in class_files)
        paths = [p for _, files in class_files for p in files]
        labels = [i for i, (_, files) in enumerate(class_files) for _ in files]
    else:
        class_names = ()
        paths, labels = loose, [-1] * len(loose)
    if not paths:
        raise ValueError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root!r}: expected class sub-folders of "
            "images or a flat folder of images"
        )
    paths = np.asarray(paths)
    labels = np.asarray(labels, np.int64)
    if num_examples is not None and num_examples < len(paths):
        keep = np.sort(np.random.default_rng(seed).permutation(len(paths))[:num_examples])
        paths, labels = paths[keep], labels[keep]

    bad, shapes = _find_corrupt(paths)
    if bad:
        names = [str(paths[i]) for i in bad]
        if on_corrupt == "error":
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            raise ValueError(
                f"{len(names)} image file(s) in {root!r} cannot be decoded: {shown}. Remove or fix them, "
                "or pass on_corrupt='skip' to leave them out with a warning"
            )
        for name in names:
            logging.warning("skipping corrupt image file %s", name)
        keep = np.setdiff1d(np.arange(len(paths)), bad)
        paths, labels = paths[keep], labels[keep]
        if not len(paths):
            raise ValueError(f"every image file in {root!r} is corrupt")

    same_size = len(set(shapes)) == 1
    image_shape = shapes[0] if same_size else (image_size, image_size, 3)

    def decode(path, label):
        image = _read_image(path)
        if not same_size:
            image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
            image.set_shape([image_size, image_size, 3])
        else:
            image.set_shape(image_shape)
        return image, label

    num_classes = len(class_names)
    return _table_source((paths, labels), decode, num_classes, tuple(int(s) for s in image_shape), class_names, "folder")


# --------------------------------------------------------------------------- load_source


def load_source(
    name,
    split="train",
    data_dir=None,
    image_size=32,
    seed=0,
    num_examples=None,
    on_corrupt="error",
    download=False,
):
    """A `Source` for "synthetic", "folder" (with `data_dir`) or any TFDS image dataset.

    name: "synthetic" (built in, splits "train" and "test"); "folder": `data_dir` holds
        one sub-folder of .jpg/.jpeg/.png images per class (label = index of the sorted
        sub-folder names) or, unlabelled, the images themselves; a sub-folder named as
        `split` (e.g. data_dir/train) is used when there is one. Anything else is a
        TFDS name (`split` and `data_dir` as `tfds.load`'s); grayscale becomes RGB.
    image_size: side of the synthetic images; folder images of differing sizes are
        resized to it at load (folders whose images share one size keep it).
    seed: generation seed of the synthetic set (its test split uses another stream);
        picks the subset when `num_examples` limits a folder.
    num_examples: use only this many examples (default all; synthetic: 5000 train,
        1000 test).
    on_corrupt: folders only: "error" raises naming the files that do not decode,
        "skip" leaves them out with a logged warning.
    download: let TFDS download and prepare a dataset that is not there yet (needs
        network); by default a missing dataset is an error saying how to get it.
    """
    if on_corrupt not in ("error", "skip"):
        raise ValueError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
    if num_examples is not None and num_examples < 1:
        raise ValueError(f"num_examples must be positive, got {num_examples}")
    if name == "synthetic":
        return _synthetic_source(split, image_size, seed, num_examples)
    if name == "folder":
        return _folder_source(data_dir, split, image_size, seed, num_examples, on_corrupt)
    return _tfds_source(name, split, data_dir, num_examples, download)


# --------------------------------------------------------------------------- pipelines


def _seed(seed, stream):
    """A stateless seed [2] for one use (`stream`) of the user's seed."""
    return _fold_in(tf.constant([seed, 0], tf.int64), stream)


def _layout(global_batch_size, input_context):
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
    return input_context.get_per_replica_batch_size(global_batch_size), per_pipeline, input_context.input_pipeline_id * per_pipeline


def _chunk_indices(source, global_batch_size, batch, replicas_here, first_replica, seed):
    """Random-access order: chunk j -> the dataset indices of its replica's slice of the global batch."""
    n = source.num_examples
    steps_per_epoch = n // global_batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"the global batch ({global_batch_size}) is larger than the dataset ({n} examples, {source.name})")
    order_seed = _seed(seed, 1)

    def indices(chunk):
        step = chunk // replicas_here
        replica = first_replica + chunk % replicas_here
        epoch = step // steps_per_epoch
        first = (step % steps_per_epoch) * global_batch_size + replica * batch
        positions = first + tf.range(batch, dtype=tf.int64)
        return chunk, tf.random.experimental.index_shuffle(positions, _fold_in(order_seed, epoch), n - 1)

    return indices


_STREAM_GRAPH_SEED = 87654321


def _stream(
    source, global_batch_size, batch, replicas_here, first_replica, seed, start_step, input_context, element_fn, buffer
):
    """The batches this input pipeline feeds, as `(chunk, images, labels)`, deterministic in the seed.

    Chunk j of this pipeline is the batch of replica `first_replica + j % replicas_here`
    at step `j // replicas_here`. Random-access sources map every (step, replica) to
    its slice of the global batch of an index-shuffled epoch (an epoch is
    `num_examples // global_batch_size` steps), so the union over replicas is the
    single-device batch and any step can be produced without its predecessors.
    Streamed sources are sharded per input pipeline and shuffled per epoch with a seed
    of that epoch; a resumed stream skips into its epoch. `element_fn(chunk, k, image)`
    runs per image before batching (for images of varying size).
    """
    start_chunk = start_step * replicas_here
    if source.random_access:
        indices = _chunk_indices(source, global_batch_size, batch, replicas_here, first_replica, seed)
        chunks = _map(tf.data.Dataset.counter(start_chunk), indices, parallel=False)
        if source.decode is None and element_fn is None:
            images, labels = source.records
            return _map(chunks, lambda chunk, index: (chunk, tf.gather(images, index), tf.gather(labels, index)))
        elements = _map(chunks, lambda chunk, index: (tf.fill([batch], chunk), tf.range(batch), index), False).unbatch()
        records = source.records
        decode = source.decode or (lambda image, label: (image, label))
        elements = _map(
            elements, lambda chunk, k, index: (chunk, k) + tuple(decode(*[tf.gather(r, index) for r in records]))
        )
    else:
        records = source.dataset if source.records is None else source.records
        decode = source.decode or (lambda image, label: (image, label))
        n = source.num_examples
        if input_context is not None and input_context.num_input_pipelines > 1:
            pipelines, pipeline = input_context.num_input_pipelines, input_context.input_pipeline_id
            records = records.shard(pipelines, pipeline)
            n = (n - pipeline + pipelines - 1) // pipelines
        chunks_per_epoch = n // batch
        if chunks_per_epoch < 1:
            raise ValueError(f"the per-replica batch ({batch}) is larger than this input pipeline's {n} examples")
        order_seed = _seed(seed, 1)
        buffer = max(1, min(n, buffer))

        def epoch_records(epoch):
            # A tensor op seed is combined with the graph-level seed, and TF fails on a
            # global seed of 0 (`tf.random.set_seed(0)`); pinning this function's graph
            # seed keeps the order a function of `seed` alone, whatever the caller set.
            tf.random.set_seed(_STREAM_GRAPH_SEED)
            shuffle_seed = tf.random.stateless_uniform(
                [], _fold_in(order_seed, epoch), minval=None, maxval=None, dtype=tf.int64
            )
            return records.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False).take(chunks_per_epoch * batch)

        stream = tf.data.Dataset.counter(start_chunk // chunks_per_epoch).flat_map(epoch_records)
        stream = stream.skip((start_chunk % chunks_per_epoch) * batch)
        position = tf.data.Dataset.counter(start_chunk * batch)
        elements = _map(
            tf.data.Dataset.zip((position, stream)), lambda e, record: (e // batch, e % batch) + tuple(decode(*record))
        )
    if element_fn is not None:
        elements = _map(elements, lambda chunk, k, image, label: (chunk, element_fn(chunk, k, image), label))
    else:
        elements = _map(elements, lambda chunk, k, image, label: (chunk, image, label), parallel=False)
    return _map(elements.batch(batch, drop_remainder=True), lambda chunk, x, labels: (chunk[0], x, labels), False)


def _chunk_seed(base, replicas_here, first_replica):
    """Seed of chunk j: folds in its global step and replica, so replicas draw independently."""

    def seed_of(chunk):
        step = chunk // replicas_here
        replica = tf.cast(first_replica, tf.int64) + chunk % replicas_here
        return _fold_in(_fold_in(base, step), replica)

    return seed_of


def make_pretrain_dataset(
    source, global_batch_size, augment, seed=0, start_step=0, input_context=None, shuffle_buffer=None
):
    """Infinite stream of SimSiam batches `(view1, view2)`, each float32 `[b, S, S, 3]`.

    Reshuffled every epoch (drop-remainder epochs of `num_examples // global_batch_size`
    steps) and deterministic in (seed, step): starting at `start_step` gives the same
    batches as steps `start_step, ...` of a stream started at 0. Augmentation seeds
    derive from (seed, step, replica). With `input_context` (from
    `strategy.distribute_datasets_from_function`) each input pipeline yields the
    per-replica batches of its replicas; together the replicas see the global batch.

    augment: `augment(images, seed) -> (view1, view2)` on a batch, e.g. a
        `TwoViewAugment`; sources whose image sizes vary need its `crop` and
        `appearance` stages (the crop runs per image before batching).
    shuffle_buffer: buffer of streamed (large TFDS) sources; default
        min(num_examples, 10000). Random-access sources shuffle exactly.
    """
    if start_step < 0:
        raise ValueError(f"start_step must be non-negative, got {start_step}")
    batch, replicas_here, first_replica = _layout(global_batch_size, input_context)
    seed_of = _chunk_seed(_seed(seed, 2), replicas_here, first_replica)

    element_fn = None
    if source.image_shape is None:
        if not (hasattr(augment, "crop") and hasattr(augment, "appearance")):
            raise TypeError(
                f"{source.name!r} has images of varying size; its augment needs separate crop() and appearance() "
                "stages (use simsiam_tf.augment.TwoViewAugment)"
            )

        def element_fn(chunk, k, image):
            first, second = tf.unstack(tf.random.experimental.stateless_split(_fold_in(seed_of(chunk), k), 2))
            return tf.stack([augment.crop(image, first), augment.crop(image, second)])

        def views(chunk, crops, labels):
            first, second = tf.unstack(tf.random.experimental.stateless_split(seed_of(chunk), 2))
            return augment.appearance(crops[:, 0], first), augment.appearance(crops[:, 1], second)

    else:

        def views(chunk, images, labels):
            return tuple(augment(images, seed_of(chunk)))

    buffer = DEFAULT_SHUFFLE_BUFFER if shuffle_buffer is None else shuffle_buffer
    stream = _stream(
        source, global_batch_size, batch, replicas_here, first_replica, seed, start_step, input_context, element_fn,
        buffer,
    )
    return _map(stream, views).prefetch(AUTOTUNE)


def make_eval_dataset(source, batch_size, image_size, center_crop=False):
    """Finite, ordered batches `(images float32 [b, S, S, 3] in [0, 1], labels int64 [b])`.

    `center_crop=True`: resize + centre crop (ImageNet protocol); False: plain resize
    (CIFAR-size protocol). The last batch may be smaller.
    """
    def preprocess(images, labels):
        return augment_lib.eval_preprocess(images, image_size, center_crop), labels

    if source.image_shape is None:
        dataset = _map(source.dataset, preprocess).batch(batch_size)
    else:
        dataset = _map(source.dataset.batch(batch_size), preprocess)
    return dataset.prefetch(AUTOTUNE)


def make_probe_train_dataset(
    source, batch_size, image_size, seed=0, augment=True, crop_scale=(0.08, 1.0), center_crop=False
):
    """Shuffled, repeated `(images, labels)` batches for linear-probe training.

    With `augment`, random resized crop (`crop_scale`) + flip per image; without, the
    evaluation preprocessing (`center_crop` as in `make_eval_dataset`).
    """
    if not source.labelled:
        raise ValueError(f"the linear probe needs labels, but {source.name!r} is unlabelled")
    seed_of = _chunk_seed(_seed(seed, 3), 1, 0)

    def transform(images, chunk_seed):
        if augment:
            return augment_lib.probe_augment(images, chunk_seed, image_size, crop_scale)
        return augment_lib.eval_preprocess(images, image_size, center_crop)

    element_fn = None
    if source.image_shape is None:

        def element_fn(chunk, k, image):
            return transform(image, _fold_in(seed_of(chunk), k))

        def batch_fn(chunk, images, labels):
            return images, labels

    else:

        def batch_fn(chunk, images, labels):
            return transform(images, seed_of(chunk)), labels

    stream = _stream(source, batch_size, batch_size, 1, 0, seed, 0, None, element_fn, DEFAULT_SHUFFLE_BUFFER)
    return _map(stream, batch_fn).prefetch(AUTOTUNE)
