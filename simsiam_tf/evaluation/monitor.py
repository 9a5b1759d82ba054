"""Monitors of representation quality: collapse indicators, kNN evaluation, callbacks."""

import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from simsiam_tf import progress


def normalized_std(z):
    """Per-channel std of the l2-normalised outputs, averaged over channels, times sqrt(dim).

    The paper's collapse indicator (Sec. 4.1): for outputs spread on the unit sphere the
    per-channel std is about 1/sqrt(dim), so the scaled value reads 1.0 when healthy and
    0.0 when every sample maps to the same vector.
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    dim = tf.cast(tf.shape(z)[-1], tf.float32)
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0)) * tf.sqrt(dim)


def center_residual(z):
    """Centre/residual decomposition of l2-normalised outputs (Zhang et al., ICLR 2022).

    Each normalised output is o + r_i with o the batch mean. Returns (||o||, mean_i ||r_i||):
    a collapsed representation has ||o|| -> 1 and residuals -> 0.
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    center = tf.reduce_mean(z, axis=0, keepdims=True)
    residual = z - center
    return tf.norm(center), tf.reduce_mean(tf.norm(residual, axis=-1))


# ---------------------------------------------------------------------------
# Feature extraction and weighted kNN (InstDisc, Wu et al. 2018)
# ---------------------------------------------------------------------------


def _feature_step(encoder, normalize):
    """A compiled inference step for `encoder`, returning float32 [batch, D] features."""

    @tf.function(reduce_retracing=True)
    def step(images):
        features = tf.cast(encoder(images, training=False), tf.float32)
        features = tf.reshape(features, [tf.shape(features)[0], -1])
        if normalize:
            features = tf.math.l2_normalize(features, axis=-1)
        return features

    return step


def _relax_batch_dim(spec):
    if not isinstance(spec, tf.TensorSpec):
        return spec
    if spec.shape.rank is None:
        return tf.TensorSpec(None, spec.dtype)
    return tf.TensorSpec([None] + spec.shape.as_list()[1:], spec.dtype)


def _as_int_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot
        labels = labels.argmax(axis=1)
    elif labels.ndim > 1 and labels.size == labels.shape[0]:
        labels = labels.reshape(-1)
    elif labels.ndim != 1:
        raise ValueError(f"labels must be integers [B] or one-hot [B, C], got shape {labels.shape}")
    return labels.astype(np.int64)


def _run_feature_step(step, dataset, label=None):
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(f"dataset must yield (images, labels) batches, got element_spec {spec}")
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError("dataset is infinite; pass a finite dataset (no .repeat())")
    # One trace with a free batch dimension serves every batch, the last smaller one included.
    step.get_concrete_function(tf.nest.map_structure(_relax_batch_dim, spec[0]))
    features, labels = [], []
    batches = int(dataset.cardinality())
    with progress.Progress(batches if batches >= 0 else None, label or "features (batches)") as shown:
        for images, batch_labels in dataset:
            features.append(step(images).numpy())
            labels.append(_as_int_labels(batch_labels))
            if label:
                shown.update()
    if not features:
        raise ValueError("dataset is empty")
    return np.concatenate(features).astype(np.float32), np.concatenate(labels)


def extract_features(encoder, dataset, normalize=True, progress_label=None):
    """Runs `encoder` in inference mode over a finite dataset of (images, labels) batches.

    Returns (features float32 [N, D], labels int64 [N]) in dataset order. Encoder outputs
    with more than one feature axis are flattened; one-hot labels are turned into indices.
    With `normalize` the features are l2-normalised. `progress_label`: show the batches
    done under that label when the extraction takes a while (`simsiam_tf.progress`).
    """
    return _run_feature_step(_feature_step(encoder, normalize), dataset, progress_label)


@tf.function(
    input_signature=[
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.float32),
        tf.TensorSpec([], tf.int32),
    ]
)
def _knn_predict_batch(query, bank, bank_labels, k, temperature, num_classes):
    query = tf.math.l2_normalize(query, axis=-1)
    similarity = tf.matmul(query, bank, transpose_b=True)  # [B, N_bank]
    top_sim, top_idx = tf.math.top_k(similarity, k=k)  # sorted, so column 0 is the row max
    top_labels = tf.gather(bank_labels, top_idx)
    # Scaling a row by exp(-max / T) leaves its argmax unchanged and keeps exp finite
    # for small temperatures.
    weights = tf.exp((top_sim - top_sim[:, :1]) / temperature)
    rows = tf.shape(query)[0]
    segments = tf.range(rows)[:, None] * num_classes + top_labels
    scores = tf.math.unsorted_segment_sum(tf.reshape(weights, [-1]), tf.reshape(segments, [-1]), rows * num_classes)
    scores = tf.reshape(scores, [rows, num_classes])
    return tf.argmax(scores, axis=-1, output_type=tf.int64)


def knn_predict(train_features, train_labels, query_features, num_classes, k=200, temperature=0.1, batch_size=256):
    """Weighted kNN classification of `query_features` against a labelled feature bank.

    Cosine similarity (both sides are l2-normalised here), the k most similar bank entries
    (k clipped to the bank size), each weighted by exp(similarity / temperature); the
    predicted class has the largest summed weight. Queries are processed `batch_size` at
    a time, so memory peaks at O(batch_size x bank size) besides the bank itself.

    Returns int64 [N_query] class indices.
    """
    train_features = np.asarray(train_features, np.float32)
    query_features = np.asarray(query_features, np.float32)
    train_labels = np.asarray(train_labels).reshape(-1)
    if train_features.ndim != 2 or query_features.ndim != 2:
        raise ValueError("train_features and query_features must be 2-D [N, D]")
    if train_features.shape[1] != query_features.shape[1]:
        raise ValueError(f"feature widths differ: bank {train_features.shape[1]}, query {query_features.shape[1]}")
    if train_features.shape[0] == 0:
        raise ValueError("the feature bank is empty")
    if train_labels.shape[0] != train_features.shape[0]:
        raise ValueError(f"{train_labels.shape[0]} labels for {train_features.shape[0]} bank features")
    if num_classes < 1 or train_labels.min() < 0 or train_labels.max() >= num_classes:
        raise ValueError(f"train_labels must lie in [0, num_classes={num_classes})")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    bank = tf.math.l2_normalize(tf.constant(train_features), axis=-1)
    bank_labels = tf.constant(train_labels.astype(np.int32))
    k = tf.constant(min(int(k), train_features.shape[0]), tf.int32)
    temperature = tf.constant(temperature, tf.float32)
    num_classes = tf.constant(num_classes, tf.int32)
    predictions = [np.zeros([0], np.int64)]
    for start in range(0, query_features.shape[0], batch_size):
        query = tf.constant(query_features[start : start + batch_size])
        predictions.append(_knn_predict_batch(query, bank, bank_labels, k, temperature, num_classes).numpy())
    return np.concatenate(predictions)


def knn_accuracy(
    train_features, train_labels, query_features, query_labels, num_classes, k=200, temperature=0.1, batch_size=256
):
    """Top-1 accuracy in [0, 1] of `knn_predict` on labelled queries."""
    query_labels = np.asarray(query_labels).reshape(-1)
    if query_labels.shape[0] == 0:
        raise ValueError("no queries to score")
    if query_labels.shape[0] != np.shape(query_features)[0]:
        raise ValueError(f"{query_labels.shape[0]} labels for {np.shape(query_features)[0]} queries")
    predictions = knn_predict(
        train_features, train_labels, query_features, num_classes, k=k, temperature=temperature, batch_size=batch_size
    )
    return float(np.mean(predictions == query_labels))


def _knn_evaluate_with_step(step, train_dataset, test_dataset, num_classes, k, temperature, batch_size):
    train_features, train_labels = _run_feature_step(step, train_dataset)
    test_features, test_labels = _run_feature_step(step, test_dataset)
    return knn_accuracy(
        train_features,
        train_labels,
        test_features,
        test_labels,
        num_classes,
        k=k,
        temperature=temperature,
        batch_size=batch_size,
    )


def knn_evaluate(encoder, train_dataset, test_dataset, num_classes, k=200, temperature=0.1, batch_size=256):
    """kNN top-1 accuracy in [0, 1] of `encoder` features: the train set is the bank.

    Both datasets are finite datasets of (images, labels) batches, preprocessed for
    evaluation (no augmentation); `batch_size` is the kNN query batch.
    """
    step = _feature_step(encoder, normalize=True)
    return _knn_evaluate_with_step(step, train_dataset, test_dataset, num_classes, k, temperature, batch_size)


# ---------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------


def _write_scalar(name, value, step):
    # tf.summary.scalar lives in the tensorboard package, which TensorFlow no longer
    # installs; this writes the same event (scalars plugin metadata, version 0 content).
    metadata = tf.compat.v1.SummaryMetadata(plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=metadata)


class KNNMonitor(keras.callbacks.Callback):
    """kNN top-1 accuracy of the encoder at the end of every N-th epoch and the last one.

    Args:
      encoder: the Keras model to evaluate; or a callable `fn(model) -> encoder` called
        at each evaluation; or None for `model.backbone` of the model being trained.
      train_dataset, test_dataset: finite datasets of (images, labels) batches with
        evaluation preprocessing; the train set is the kNN bank.
      num_classes: number of classes.
      every_n_epochs: evaluate when the (1-based) epoch count is a multiple of this, at
        the last epoch of `fit`, and at an epoch after which training stops early.
      k, temperature: kNN parameters (see `knn_predict`).
      log_dir: if given, `knn_top1` is also written with `tf.summary` to
        `log_dir/validation` at step = epoch (0-based, as Keras' TensorBoard callback).

    The accuracy goes into the epoch logs as `knn_top1`, so callbacks listed after this
    one (History, CSVLogger, TensorBoard, EarlyStopping) see it; as with Keras'
    `validation_freq`, epochs without an evaluation carry no `knn_top1`.
    `self.history` is a list of (epoch, accuracy) with 0-based epochs.
    """

    def __init__(
        self, encoder, train_dataset, test_dataset, num_classes, every_n_epochs=1, k=200, temperature=0.1, log_dir=None
    ):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.encoder = encoder
        self.train_dataset = train_dataset
        self.test_dataset = test_dataset
        self.num_classes = num_classes
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature
        self.log_dir = log_dir
        self.history = []
        self._writer = None
        self._step_encoder = None
        self._step = None

    def _resolve_encoder(self):
        if self.encoder is None:
            encoder = getattr(self.model, "backbone", None)
            if encoder is None:
                raise ValueError("KNNMonitor was given no encoder and the model has no `backbone`")
            return encoder
        if isinstance(self.encoder, keras.layers.Layer):
            return self.encoder
        return self.encoder(self.model)

    def _should_evaluate(self, epoch):
        last_epoch = (self.params or {}).get("epochs")
        return (
            (epoch + 1) % self.every_n_epochs == 0
            or (last_epoch is not None and epoch + 1 >= last_epoch)
            or bool(getattr(self.model, "stop_training", False))
        )

    def on_epoch_end(self, epoch, logs=None):
        if not self._should_evaluate(epoch):
            return
        encoder = self._resolve_encoder()
        if encoder is not self._step_encoder:
            self._step_encoder = encoder
            self._step = _feature_step(encoder, normalize=True)
        start = time.perf_counter()
        accuracy = _knn_evaluate_with_step(
            self._step, self.train_dataset, self.test_dataset, self.num_classes, self.k, self.temperature, 256
        )
        self.history.append((epoch, accuracy))
        if logs is not None:
            logs["knn_top1"] = accuracy
        if self.log_dir:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "validation"))
            with self._writer.as_default():
                _write_scalar("knn_top1", accuracy, step=epoch)
            self._writer.flush()
        logging.info("epoch %d: knn_top1 = %.4f (%.1f s)", epoch, accuracy, time.perf_counter() - start)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class CollapseMonitor(keras.callbacks.Callback):
    """Watches the normalised output std (`z_std`, see `normalized_std`) for collapse.

    A check reads `metric` from the logs: by default (`check_every=None`) the epoch logs
    at each epoch end, or, with `check_every=N`, the batch logs once at least N training
    steps have passed since the previous check. `patience` consecutive checks below
    `threshold` mean collapse; then, by `action`:
      "stop":   sets `model.stop_training` and logs the message as a warning;
      "warn":   logs the message as a warning once and lets training go on;
      "ignore": neither stops nor logs.
    In every mode `collapsed`, `collapsed_at_step` (the optimizer's iteration count) and
    `message` record the first collapse seen; `hint` is appended to the message.
    State persists across `fit` calls with the same instance.

    `running_mean=True` says that the batch logs hold means since the start of the epoch
    (what Keras metric trackers such as SimSiam's report); a step check then reads the
    mean over the steps since the previous check of the epoch, recovered from two
    running means, so that a collapse late in a long epoch is not averaged away.
    """

    ACTIONS = ("stop", "warn", "ignore")

    def __init__(
        self, threshold=0.3, patience=3, action="stop", metric="z_std", hint="", check_every=None, running_mean=False
    ):
        super().__init__()
        if action not in self.ACTIONS:
            raise ValueError(f"action must be one of {self.ACTIONS}, got {action!r}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if check_every is not None and check_every < 1:
            raise ValueError(f"check_every must be None or >= 1, got {check_every}")
        self.threshold = threshold
        self.patience = patience
        self.action = action
        self.metric = metric
        self.hint = hint
        self.check_every = check_every
        self.running_mean = bool(running_mean)
        self.collapsed = False
        self.collapsed_at_step = None
        self.message = ""
        self.consecutive = 0
        self._steps_seen = 0
        self._epoch_start_steps = 0
        self._last_check_steps = 0
        self._warned_missing = False
        self._window_start = (0, 0.0)  # (steps into the epoch, running mean there)

    @property
    def suspect(self):
        """True while the latest check read a collapsed value (the alarm may not have fired yet)."""
        return self.consecutive > 0

    def _global_step(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            return int(optimizer.iterations.numpy())
        return self._steps_seen

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_steps = self._steps_seen
        self._window_start = (0, 0.0)

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the index of the last step run (it jumps with steps_per_execution).
        self._steps_seen = self._epoch_start_steps + batch + 1
        if self.check_every is None:
            return
        if self._steps_seen - self._last_check_steps >= self.check_every:
            self._last_check_steps = self._steps_seen
            if self.running_mean:
                logs = self._window_logs(batch + 1, logs)
            self._check(logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.check_every is None:
            self._check(logs)

    def _window_logs(self, steps_into_epoch, logs):
        value = (logs or {}).get(self.metric)
        if value is None:
            return logs
        start, start_mean = self._window_start
        mean = float(value)
        self._window_start = (steps_into_epoch, mean)
        if steps_into_epoch <= start:
            return logs
        window = (steps_into_epoch * mean - start * start_mean) / (steps_into_epoch - start)
        return dict(logs, **{self.metric: window})

    def _check(self, logs):
        value = (logs or {}).get(self.metric)
        if value is None:
            if not self._warned_missing:
                self._warned_missing = True
                logging.warning("CollapseMonitor: no %r in the logs; collapse is not watched", self.metric)
            return
        value = float(value)
        name = "normalised z-std" if self.metric == "z_std" else self.metric
        sound_alarm(
            self,
            value < self.threshold,
            self._global_step(),
            lambda: (
                f"representation collapsed at step {self.collapsed_at_step}: {name} "
                f"{value:.4g} < threshold {self.threshold} for {self.consecutive} "
                f"consecutive checks; every input maps to nearly the same output vector"
            ),
        )


def sound_alarm(alarm, low, step, describe):
    """One check of a collapse alarm (a Keras callback with `patience`, `action`, `hint`, `consecutive`,
    `collapsed`, `collapsed_at_step` and `message`).

    `low` counts toward `patience` consecutive low checks (a check that is not low starts
    the count again); then the alarm fires once: `message` is `describe()` (plus the hint),
    logged for action "warn", and with action "stop" training stops.
    """
    if not low:
        alarm.consecutive = 0
        return
    alarm.consecutive += 1
    if alarm.consecutive < alarm.patience:
        return
    if not alarm.collapsed:
        alarm.collapsed = True
        alarm.collapsed_at_step = step
        alarm.message = describe() + (f"; {alarm.hint}" if alarm.hint else "")
        if alarm.action == "warn":
            logging.warning("%s", alarm.message)
    if alarm.action == "stop":
        if not alarm.model.stop_training:
            logging.warning("%s", alarm.message)
        alarm.model.stop_training = True
