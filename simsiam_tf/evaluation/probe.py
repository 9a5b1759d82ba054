"""Linear classifier on cached (pre-extracted) features: the fast linear-probe path."""

import keras
import numpy as np

from simsiam_tf import optim
from simsiam_tf.config import LR_SCHEDULES, PROBE_OPTIMIZERS, check_choice


def build_linear_classifier(num_classes, feature_dim=None, name="classifier"):
    """The paper's probe head: one Dense layer, weights N(0, 0.01), bias 0."""
    layer = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer="zeros",
        dtype="float32",
        name=name,
    )
    if feature_dim is not None:
        layer.build((None, feature_dim))
    return layer


def linear_optimizer(name, learning_rate, momentum=0.9, weight_decay=0.0):
    """The probe's optimizer by name.

    "lars": LARS with trust coefficient 0.001; the bias gets neither weight decay nor
    adaptation (the reference's LARS probe). "sgd": `CoupledSGD`, coupled L2 decay on
    every variable (the reference's plain SGD probe). `learning_rate`: float or schedule.
    """
    check_choice("optimizer", name, PROBE_OPTIMIZERS)
    if name == "lars":
        return optim.LARS(
            learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay, trust_coefficient=0.001
        )
    return optim.CoupledSGD(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)


def topk_accuracy(logits, labels, k):
    """Fraction of rows whose label is among the k largest logits."""
    logits = np.asarray(logits)
    labels = np.asarray(labels).astype(np.int64)
    k = min(k, logits.shape[1])
    topk = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(topk == labels[:, None], axis=1)))


class EpochEvaluation(keras.callbacks.Callback):
    """After every epoch, top-1/top-5 of `classifier` on fixed evaluation features.

    The reference's linear evaluation validates after every epoch and reports the best
    epoch's top-1 (main_lincls.py's best_acc1). The encoder is frozen, so its features
    of the evaluation images are extracted once; every image counts, the last partial
    batch included. The values go into the epoch's logs as `val_top1` and `val_top5`,
    where callbacks after this one (a history file) see them.
    """

    def __init__(self, classifier, features, labels, batch_size=4096):
        super().__init__()
        self.classifier = classifier
        self.features = np.asarray(features, np.float32)
        self.labels = np.asarray(labels, np.int64)
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        logits = np.concatenate(
            [
                keras.ops.convert_to_numpy(self.classifier(self.features[i : i + self.batch_size]))
                for i in range(0, len(self.features), self.batch_size)
            ]
        )
        if logs is not None:
            logs["val_top1"] = topk_accuracy(logits, self.labels, 1)
            logs["val_top5"] = topk_accuracy(logits, self.labels, 5)


def best_epoch(history):
    """(best top-1, its epoch) over epoch records {"epoch", "val_top1", ...}; the first epoch wins a tie; None without any."""
    scored = [(record["val_top1"], -record["epoch"]) for record in history if "val_top1" in record]
    if not scored:
        return None
    top1, negative_epoch = max(scored)
    return top1, -negative_epoch


def feature_statistics(features):
    """(mean, std), each float32 [1, D], of training features as the probe standardises them (std + 1e-6)."""
    features = np.asarray(features, np.float32)
    return features.mean(axis=0, keepdims=True), features.std(axis=0, keepdims=True) + 1e-6


def fold_standardization(classifier, mean, std):
    """Rewrites a Dense layer trained on (x - mean) / std so that it gives the same logits on x itself."""
    kernel, bias = classifier.get_weights()
    mean, std = np.reshape(mean, [-1]), np.reshape(std, [-1])
    classifier.set_weights([kernel / std[:, None], bias - (mean / std) @ kernel])


def train_linear_on_features(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes,
    epochs=30,
    batch_size=256,
    base_lr=0.1,
    momentum=0.9,
    weight_decay=0.0,
    standardize=True,
    seed=0,
    verbose=0,
    optimizer="sgd",
    classifier=None,
    callbacks=None,
    lr_schedule="step",
):
    """Trains a linear classifier on fixed features with a cosine schedule.

    `standardize` rescales every feature dimension to zero mean and unit variance on
    the training set (an affine map, so the probe stays linear); it makes one learning
    rate fit encoders whose features differ in scale, such as a trained and a
    random-init one. The paper's probe trains on the raw features (standardize=False).

    optimizer: "sgd" or "lars" (see `linear_optimizer`) on a cosine schedule from
        `base_lr` to 0 over the run, with `momentum` and `weight_decay`; or a Keras
        optimizer instance, used as it is (with its own learning rate; `base_lr`,
        `momentum` and `weight_decay` are then unused).
    lr_schedule: "step" (the cosine decays every step) or "epoch" (once per epoch, as the
        reference's `adjust_learning_rate`); for a named optimizer only.
    classifier: a Dense layer from `build_linear_classifier` to train in place (so the
        caller keeps it); by default a new one.
    callbacks: Keras callbacks for the fit.

    Returns {"top1", "top5"} on the test features, fractions in [0, 1].
    """
    train_features = np.asarray(train_features, np.float32)
    test_features = np.asarray(test_features, np.float32)
    train_labels = np.asarray(train_labels, np.int64)
    test_labels = np.asarray(test_labels, np.int64)
    if len(train_features) == 0 or len(test_features) == 0:
        raise ValueError("the linear probe needs labelled train and test features; got an empty set")
    if train_labels.min() < 0 or max(train_labels.max(), test_labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}); the probe needs a labelled dataset")
    if standardize:
        mean, std = feature_statistics(train_features)
        train_features = (train_features - mean) / std
        test_features = (test_features - mean) / std
    keras.utils.set_random_seed(seed)
    if isinstance(optimizer, str):
        steps_per_epoch = max(1, int(np.ceil(len(train_features) / batch_size)))
        check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
        schedule = optim.WarmupCosine(
            peak_lr=base_lr,
            total_steps=epochs * steps_per_epoch,
            steps_per_epoch=steps_per_epoch if lr_schedule == "epoch" else None,
        )
        optimizer = linear_optimizer(optimizer, schedule, momentum=momentum, weight_decay=weight_decay)
    if classifier is None:
        classifier = build_linear_classifier(num_classes)
    model = keras.Sequential([keras.Input((train_features.shape[1],)), classifier], name="linear_probe")
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(
        train_features,
        train_labels,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=verbose,
        callbacks=callbacks,
    )
    logits = model.predict(test_features, batch_size=1024, verbose=0)
    return {"top1": topk_accuracy(logits, test_labels, 1), "top5": topk_accuracy(logits, test_labels, 5)}
