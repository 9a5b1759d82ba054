"""Honest baselines: raw pixels beside the trained encoder, and plain-words warnings when it does no better.

A learned representation is worth something only where it beats the images it is
computed from. `fit_pixel_encoder` turns the evaluation images into features: the
images as the encoder sees them at evaluation (same preprocessing, same resolution),
flattened, each pixel standardised with the training set's mean and std. It is a Keras
model from images to features, so it goes through exactly the code the encoder goes
through: `monitor.extract_features`, `monitor.knn_predict`, `probe.train_linear_on_features`,
`models.LinearProbe`. `PixelVerifier` scores image pairs by the distance between their
standardised pixels, with the `embed` / `score_embeddings` interface of `PairVerifier`,
so pair and trial scoring and `pair_metrics` treat it as any verifier.
`baseline_warnings` compares figures of the trained encoder with those of the baselines.
"""

import keras
import numpy as np
import tensorflow as tf

from simsiam_tf.config import check_choice

PIXEL_DISTANCES = ("cosine", "l2")

# Pixel features wider than 64 x 64 x 3 make the kNN bank and the probe's weight
# matrix large (a 224-px ImageNet image has 150,528), and raw pixels are a meaningful
# baseline only for small images; `pixel_baseline_note` says why a run skips them.
MAX_PIXEL_FEATURES = 64 * 64 * 3

# Constant pixels (a border every training image shares) have std 0; dividing by 1
# instead keeps them at 0 in the training set and finite elsewhere.
_MIN_STD = 1e-6

# Figures the warnings look at: key -> (words, higher is better).
FIGURES = {
    "knn_top1": ("kNN top-1", True),
    "probe_top1": ("linear probe top-1", True),
    "top1": ("linear probe top-1", True),
    "roc_auc": ("ROC-AUC", True),
    "eer": ("EER", False),
}
# Baselines in metrics: key prefix -> words.
BASELINES = (("pixels_", "raw pixels"), ("random_init_", "the same encoder at random init"))


def pixel_feature_count(image_shape):
    """Number of pixel features of images of shape (H, W, C)."""
    return int(np.prod([int(d) for d in image_shape]))


def pixel_baseline_note(image_shape):
    """Why raw pixels are not evaluated for images of this shape, or None when they are."""
    count = pixel_feature_count(image_shape)
    if count <= MAX_PIXEL_FEATURES:
        return None
    shape = "x".join(str(int(d)) for d in image_shape)
    return (
        f"raw-pixel baseline skipped: {shape} images give {count} pixel features, more than {MAX_PIXEL_FEATURES} "
        "(64x64x3); raw pixels are a baseline for small images"
    )


def _images_of(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def pixel_statistics(dataset):
    """(mean, std) float32 `[H * W * C]` of the flattened images of a finite dataset.

    `dataset` yields image batches `[b, H, W, C]` or `(images, labels)` batches, with the
    evaluation preprocessing already applied (`data.make_eval_dataset`). The std is the
    population std; pixels that never change get std 1 (see `_MIN_STD`).
    """
    total = total_sq = None
    count = 0
    for batch in dataset:
        images = np.asarray(_images_of(batch), np.float64)
        flat = images.reshape(images.shape[0], -1)
        if total is None:
            total, total_sq = np.zeros(flat.shape[1]), np.zeros(flat.shape[1])
        total += flat.sum(axis=0)
        total_sq += np.square(flat).sum(axis=0)
        count += flat.shape[0]
    if not count:
        raise ValueError("the dataset for the pixel statistics is empty")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    std = np.where(std > _MIN_STD, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def pixel_encoder(image_shape, mean, std, name="raw_pixels"):
    """A Keras model: images `[N, H, W, C]` -> standardised flattened pixels `[N, H * W * C]`, float32."""
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    width = pixel_feature_count(image_shape)
    if mean.shape != (width,) or std.shape != (width,):
        raise ValueError(
            f"mean and std must have {width} entries (images {tuple(image_shape)}), got {mean.size} and {std.size}"
        )
    if np.any(std <= 0):
        raise ValueError("std must be positive everywhere")
    inputs = keras.Input(tuple(int(d) for d in image_shape), name=f"{name}_images")
    flat = keras.layers.Flatten(name=f"{name}_flatten", dtype="float32")(inputs)
    outputs = keras.layers.Normalization(
        axis=-1, mean=mean, variance=np.square(std), name=f"{name}_standardize", dtype="float32"
    )(flat)
    return keras.Model(inputs, outputs, name=name)


def fit_pixel_encoder(train_dataset, name="raw_pixels"):
    """`pixel_encoder` standardised with the statistics of `train_dataset` (see `pixel_statistics`)."""
    spec = train_dataset.element_spec
    image_spec = spec[0] if isinstance(spec, (tuple, list)) else spec
    image_shape = image_spec.shape[1:]
    mean, std = pixel_statistics(train_dataset)
    if not image_shape.is_fully_defined():
        first = next(iter(train_dataset))
        image_shape = np.asarray(_images_of(first)).shape[1:]
    return pixel_encoder(tuple(image_shape), mean, std, name=name)


class PixelVerifier:
    """Pair scores from the distance between two images' standardised pixels: verification without learning.

    `embed(images)` gives the `pixel_encoder` features; `score_embeddings(e1, e2)` is the
    cosine similarity ("cosine") or minus the euclidean distance ("l2") of each row
    pair, higher for pairs more likely the same, as `PairVerifier.score_embeddings`.
    """

    def __init__(self, encoder, distance="cosine"):
        check_choice("distance", distance, PIXEL_DISTANCES)
        self.encoder = encoder
        self.distance = distance
        self.embedding_dim = int(encoder.output_shape[-1])
        self.threshold = 0.0

    def embed(self, x, training=False):
        return tf.cast(self.encoder(x, training=False), tf.float32)

    def score_embeddings(self, e1, e2):
        e1 = tf.convert_to_tensor(e1, tf.float32)
        e2 = tf.convert_to_tensor(e2, tf.float32)
        if self.distance == "cosine":
            return tf.reduce_sum(tf.math.l2_normalize(e1, axis=-1) * tf.math.l2_normalize(e2, axis=-1), axis=-1)
        return -tf.sqrt(tf.reduce_sum(tf.square(e1 - e2), axis=-1))

    def score(self, x1, x2):
        return self.score_embeddings(self.embed(x1), self.embed(x2))

    def set_threshold(self, value):
        self.threshold = float(value)


def _format(value):
    return f"{value:.3f}"


def baseline_warnings(metrics, figures=None, baselines=BASELINES):
    """Plain-words warnings, one per baseline the trained encoder does not beat, from a flat metrics dict.

    `metrics` holds the trained encoder's figures under their keys (`knn_top1`) and each
    baseline's under its prefix (`pixels_knn_top1`, `random_init_knn_top1`); `figures`
    (default `FIGURES`) says which keys to compare and whether higher is better. A figure
    counts against the encoder when it is not strictly better than the baseline's; a
    figure missing on either side (or None) is not compared. Returns [] when the encoder
    beats every baseline on every compared figure.
    """
    figures = FIGURES if figures is None else figures
    warnings = []
    for prefix, baseline_name in baselines:
        worse = []
        for key, (words, higher_is_better) in figures.items():
            ours, theirs = metrics.get(key), metrics.get(prefix + key)
            if ours is None or theirs is None:
                continue
            better = ours > theirs if higher_is_better else ours < theirs
            if not better:
                worse.append(f"{words} {_format(ours)} vs {_format(theirs)} for {baseline_name}")
        if worse:
            warnings.append(f"the trained encoder is not better than {baseline_name} on this data: " + "; ".join(worse))
    return warnings
