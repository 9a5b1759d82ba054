import glob
import logging as py_logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf.evaluation import monitor

# --- collapse indicators ---------------------------------------------------


def test_identical_rows_read_as_collapsed():
    row = np.random.default_rng(0).normal(size=(1, 16)).astype(np.float32)
    z = np.repeat(row, 8, axis=0)
    assert float(monitor.normalized_std(z)) == pytest.approx(0.0, abs=1e-5)
    center, residual = monitor.center_residual(z)
    assert float(center) == pytest.approx(1.0, abs=1e-5)
    assert float(residual) == pytest.approx(0.0, abs=1e-5)


def test_gaussian_rows_read_as_healthy():
    z = np.random.default_rng(1).normal(size=(512, 256)).astype(np.float32)
    assert 0.9 < float(monitor.normalized_std(z)) < 1.1
    center, residual = monitor.center_residual(z)
    assert float(center) < 0.1
    assert 0.95 < float(residual) <= 1.0


# --- weighted kNN ----------------------------------------------------------


def brute_force_knn(bank, bank_labels, queries, num_classes, k, temperature):
    bank = bank.astype(np.float64)
    queries = queries.astype(np.float64)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    sims = queries @ bank.T
    k = min(k, len(bank))
    predictions = []
    for row in sims:
        nearest = np.argsort(-row, kind="stable")[:k]
        scores = np.zeros(num_classes)
        for j in nearest:
            scores[bank_labels[j]] += np.exp(row[j] / temperature)
        predictions.append(np.argmax(scores))
    return np.array(predictions)


def random_problem(seed, n_bank=120, n_query=50, dim=16, num_classes=5):
    rng = np.random.default_rng(seed)
    bank = (3.0 * rng.normal(size=(n_bank, dim))).astype(np.float32)
    queries = rng.normal(size=(n_query, dim)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=n_bank)
    return bank, labels, queries


@pytest.mark.parametrize("k, temperature", [(1, 0.1), (5, 0.07), (20, 0.5), (200, 0.1), (500, 0.02)])
def test_knn_predict_matches_brute_force(k, temperature):
    # 5 classes with class 4 absent from the bank; queries in batches of 7; the last two
    # cases ask for more neighbours than the 120 bank entries.
    bank, labels, queries = random_problem(seed=k)
    labels = labels % 4
    got = monitor.knn_predict(bank, labels, queries, 5, k=k, temperature=temperature, batch_size=7)
    want = brute_force_knn(bank, labels, queries, 5, k, temperature)
    assert got.dtype == np.int64 and got.shape == (50,)
    np.testing.assert_array_equal(got, want)


def test_knn_with_one_neighbour_recovers_bank_labels():
    bank, labels, _ = random_problem(seed=3)
    got = monitor.knn_predict(bank, labels, bank, 5, k=1, batch_size=16)
    np.testing.assert_array_equal(got, labels)


def test_knn_query_batch_size_does_not_change_predictions():
    bank, labels, queries = random_problem(seed=4, n_query=37)
    tiny = monitor.knn_predict(bank, labels, queries, 5, k=30, batch_size=1)
    large = monitor.knn_predict(bank, labels, queries, 5, k=30, batch_size=10_000)
    np.testing.assert_array_equal(tiny, large)


def test_knn_accuracy_is_fraction_correct():
    bank, labels, queries = random_problem(seed=5)
    query_labels = np.random.default_rng(6).integers(0, 5, size=len(queries))
    want = np.mean(brute_force_knn(bank, labels, queries, 5, 10, 0.1) == query_labels)
    got = monitor.knn_accuracy(bank, labels, queries, query_labels, 5, k=10, batch_size=8)
    assert isinstance(got, float)
    assert got == pytest.approx(want)


def test_knn_rejects_labels_outside_num_classes():
    bank, labels, queries = random_problem(seed=7)
    with pytest.raises(ValueError, match="num_classes"):
        monitor.knn_predict(bank, labels, queries, num_classes=3)


# --- feature extraction ----------------------------------------------------


class CountingEncoder(keras.Model):
    """Records the `training` flag of every Python-level call (i.e. every trace)."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)
        self.calls = []

    def call(self, x, training=None):
        self.calls.append(training)
        return self.dense(x)


def test_extract_features_order_normalisation_and_single_trace():
    x = np.random.default_rng(8).normal(size=(10, 5)).astype(np.float32)
    y = np.arange(10) % 4
    encoder = CountingEncoder()
    raw = encoder(x).numpy()
    encoder.calls.clear()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # batches 4, 4, 2

    features, labels = monitor.extract_features(encoder, dataset)

    assert encoder.calls == [False]  # one trace for all batches, in inference mode
    assert features.dtype == np.float32 and features.shape == (10, 3)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(features, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    unnormalised, _ = monitor.extract_features(encoder, dataset, normalize=False)
    np.testing.assert_allclose(unnormalised, raw, atol=1e-5)


def test_extract_features_rejects_infinite_dataset():
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((2, 5), np.float32), [0, 1]))
    with pytest.raises(ValueError, match="infinite"):
        monitor.extract_features(CountingEncoder(), dataset.batch(2).repeat())


# --- KNNMonitor ------------------------------------------------------------


def clustered(seed, per_class, num_classes=3, dim=4):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    x = 5.0 * np.eye(dim)[labels] + 0.3 * rng.normal(size=(len(labels), dim))
    return x.astype(np.float32), labels


class TinyBackboneModel(keras.Model):
    """A model with a `.backbone` whose train_step leaves the weights alone."""

    def __init__(self):
        super().__init__()
        self.backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])

    def call(self, x, training=False):
        return self.backbone(x, training=training)

    def train_step(self, data):
        return {"loss": tf.constant(0.0)}


def knn_setup():
    train_x, train_y = clustered(0, per_class=20)
    test_x, test_y = clustered(1, per_class=10)
    train = tf.data.Dataset.from_tensor_slices((train_x, train_y)).batch(16)
    test = tf.data.Dataset.from_tensor_slices((test_x, test_y)).batch(16)
    model = TinyBackboneModel()
    model.compile(optimizer="sgd")
    pretrain = tf.data.Dataset.from_tensor_slices(train_x).batch(20)
    return model, pretrain, train, test


def test_knn_monitor_logs_to_history_and_tensorboard(tmp_path):
    model, pretrain, train, test = knn_setup()
    callback = monitor.KNNMonitor(None, train, test, num_classes=3, k=10, log_dir=str(tmp_path))
    history = model.fit(pretrain, epochs=2, callbacks=[callback], verbose=0, shuffle=False)

    expected = monitor.knn_evaluate(model.backbone, train, test, num_classes=3, k=10)
    assert expected > 0.9
    assert history.history["knn_top1"] == pytest.approx([expected, expected])
    assert callback.history == [(0, pytest.approx(expected)), (1, pytest.approx(expected))]

    events = glob.glob(os.path.join(str(tmp_path), "validation", "events.out.tfevents.*"))
    assert events
    written = []
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "knn_top1":
                    if not written:
                        assert value.metadata.plugin_data.plugin_name == "scalars"
                    written.append((event.step, float(tf.make_ndarray(value.tensor))))
    assert sorted(written) == [(0, pytest.approx(expected)), (1, pytest.approx(expected))]


def test_knn_monitor_every_n_epochs_and_final_epoch_with_encoder_fn():
    model, pretrain, train, test = knn_setup()
    callback = monitor.KNNMonitor(lambda m: m.backbone, train, test, num_classes=3, k=10, every_n_epochs=2)
    history = model.fit(pretrain, epochs=3, callbacks=[callback], verbose=0, shuffle=False)
    assert [epoch for epoch, _ in callback.history] == [1, 2]
    assert len(history.history["knn_top1"]) == 2


# --- CollapseMonitor -------------------------------------------------------


class ScheduledZStdModel(keras.Model):
    """Takes a real optimizer step and reports z_std from a fixed per-step schedule."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = tf.constant(schedule, tf.float32)
        self.w = self.add_weight(shape=(), initializer="ones", name="w")

    def call(self, x):
        return x

    def train_step(self, data):
        index = tf.minimum(self.optimizer.iterations, len(self.schedule) - 1)
        z_std = tf.gather(self.schedule, index)
        with tf.GradientTape() as tape:
            loss = tf.square(self.w)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, [self.w]), [self.w]))
        return {"loss": loss, "z_std": z_std}


def fit_with(callback, schedule, steps_per_epoch=5, epochs=2):
    model = ScheduledZStdModel(schedule)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    data = tf.data.Dataset.range(steps_per_epoch).map(lambda i: tf.cast(i, tf.float32))
    history = model.fit(data.batch(1), epochs=epochs, callbacks=[callback], verbose=0, shuffle=False)
    return model, history


def test_collapse_monitor_stops_after_patience_checks():
    callback = monitor.CollapseMonitor(
        threshold=0.1, patience=3, action="stop", check_every=1, hint="is stop-gradient on?"
    )
    model, _ = fit_with(callback, [0.0])
    assert callback.collapsed
    assert callback.collapsed_at_step == 3
    assert int(model.optimizer.iterations.numpy()) == 3
    assert callback.message.startswith("representation collapsed at step 3: normalised z-std 0")
    assert "< threshold 0.1 for 3 consecutive checks" in callback.message
    assert callback.message.endswith("is stop-gradient on?")


def test_collapse_monitor_checks_epoch_logs_by_default():
    callback = monitor.CollapseMonitor(patience=2)
    model, history = fit_with(callback, [0.0], steps_per_epoch=2, epochs=5)
    assert callback.collapsed and callback.collapsed_at_step == 4
    assert len(history.history["loss"]) == 2


def test_collapse_monitor_warns_once_and_continues(caplog):
    callback = monitor.CollapseMonitor(patience=2, action="warn", check_every=1)
    with caplog.at_level(py_logging.WARNING):
        model, _ = fit_with(callback, [0.0])
    assert int(model.optimizer.iterations.numpy()) == 10
    assert callback.collapsed and callback.collapsed_at_step == 2
    warnings = [r for r in caplog.records if "representation collapsed" in r.getMessage()]
    assert len(warnings) == 1


def test_collapse_monitor_quiet_on_healthy_and_intermittent_values():
    # Dips shorter than `patience` reset the count.
    schedule = [1.0, 0.05, 0.05, 0.9, 0.05, 0.05, 1.0, 0.0, 0.0, 1.0]
    callback = monitor.CollapseMonitor(patience=3, check_every=1)
    model, _ = fit_with(callback, schedule)
    assert not callback.collapsed and callback.message == ""
    assert callback.collapsed_at_step is None
    assert int(model.optimizer.iterations.numpy()) == 10


def test_collapse_monitor_rejects_unknown_action():
    with pytest.raises(ValueError, match="action"):
        monitor.CollapseMonitor(action="halt")
