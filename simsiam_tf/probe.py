"""Linear classifier on cached (pre-extracted) features: the fast linear-probe path."""
import keras
import numpy as np

from simsiam_tf import optim


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


def topk_accuracy(logits, labels, k):
    """Fraction of rows whose label is among the k largest logits."""
    logits = np.asarray(logits)
    labels = np.asarray(labels).astype(np.int64)
    k = min(k, logits.shape[1])
    topk = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(topk == labels[:, None], axis=1)))


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
):
    """Trains a linear classifier on fixed features with SGD and a cosine schedule.

    `standardize` rescales every feature dimension to zero mean and unit variance on
    the training set (an affine map, so the probe stays linear); it makes one learning
    rate fit encoders whose features differ in scale, such as a trained and a
    random-init one. Returns {"top1", "top5"} on the test features, fractions in [0, 1].
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
        mean = train_features.mean(axis=0, keepdims=True)
        std = train_features.std(axis=0, keepdims=True) + 1e-6
        train_features = (train_features - mean) / std
        test_features = (test_features - mean) / std
    keras.utils.set_random_seed(seed)
    steps_per_epoch = max(1, int(np.ceil(len(train_features) / batch_size)))
    schedule = optim.WarmupCosine(peak_lr=base_lr, total_steps=epochs * steps_per_epoch)
    classifier = keras.Sequential(
        [keras.Input((train_features.shape[1],)), build_linear_classifier(num_classes)], name="linear_probe"
    )
    classifier.compile(
        optimizer=optim.CoupledSGD(learning_rate=schedule, momentum=momentum, weight_decay=weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    classifier.fit(
        train_features, train_labels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose
    )
    logits = classifier.predict(test_features, batch_size=1024, verbose=0)
    return {"top1": topk_accuracy(logits, test_labels, 1), "top5": topk_accuracy(logits, test_labels, 5)}
