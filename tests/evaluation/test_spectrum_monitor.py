"""SpectrumMonitor on a model with a known projector: readings, TensorBoard events, the dimensional-collapse alarm."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf.evaluation import spectrum_monitor

IMAGES = np.random.default_rng(0).normal(size=(64, 4, 4, 1)).astype(np.float32)  # backbone: flatten to 16


class Model(keras.Model):
    """backbone = flatten, projector = x @ kernel: the projector's output spans the kernel's column space."""

    def __init__(self, kernel):
        super().__init__()
        self.backbone = keras.layers.Flatten()
        self.projector = keras.layers.Dense(kernel.shape[1], use_bias=False)
        self.projector.build((None, kernel.shape[0]))
        self.projector.kernel.assign(kernel)
        self.compile(optimizer=keras.optimizers.SGD())


def rank_k_kernel(k, width=32, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(16, k)) @ rng.normal(size=(k, width))).astype(np.float32)


def drive(monitor, model, steps):
    monitor.set_model(model)
    monitor.on_train_begin()
    for step in range(1, steps + 1):
        model.optimizer.iterations.assign(step)
        monitor.on_train_batch_end(step - 1)
        if model.stop_training:
            break
    monitor.on_train_end()


def oracle_rank(z):
    s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
    p = s / s.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


def test_readings_of_both_layers_match_numpy_and_go_to_tensorboard(tmp_path):
    kernel = rank_k_kernel(16)
    model = Model(kernel)
    monitor = spectrum_monitor.SpectrumMonitor(IMAGES, every_n_steps=2, log_dir=str(tmp_path), rank_fraction=None)
    drive(monitor, model, 5)
    assert [h["step"] for h in monitor.history] == [2, 4, 5]  # every 2 steps, and the end
    features = IMAGES.reshape(64, 16)
    assert monitor.final["backbone"]["effective_rank"] == pytest.approx(oracle_rank(features), rel=1e-3)
    assert monitor.final["projector"]["effective_rank"] == pytest.approx(oracle_rank(features @ kernel), rel=1e-3)
    assert monitor.final["projector"]["rank_limit"] == 32
    summary = spectrum_monitor.summary(monitor)["spectrum"]
    assert len(summary["projector"]["spectrum"]) == 32 and len(summary["backbone"]["spectrum"]) == 16
    assert sum(summary["projector"]["spectrum"]) == pytest.approx(1.0, abs=1e-3)
    tags, images = set(), 0
    folder = os.path.join(tmp_path, "spectrum")
    for name in os.listdir(folder):
        for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
            for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value:
                tags.add(value.tag)
                if value.tag.endswith("singular_values"):
                    png = tf.make_ndarray(value.tensor)[2]
                    assert tf.io.decode_png(png).shape[1] in (16, 32)  # one column per singular value
                    images += 1
    assert {"spectrum/projector/effective_rank", "spectrum/backbone/residual_correlation"} <= tags
    assert images == 6  # two layers x three checks


def test_alarm_fires_on_a_rank_two_projector_after_patience_checks():
    model = Model(rank_k_kernel(2))
    monitor = spectrum_monitor.SpectrumMonitor(IMAGES, every_n_steps=1, rank_fraction=0.25, patience=3, action="stop")
    drive(monitor, model, 10)
    assert monitor.collapsed and monitor.collapsed_at_step == 3
    assert model.stop_training
    assert "dimensional collapse at step 3" in monitor.message
    assert "effective rank" in monitor.message and "0.25 x 32 = 8" in monitor.message


def test_alarm_stays_quiet_on_a_full_rank_projector_and_warn_does_not_stop():
    healthy = Model(rank_k_kernel(16))
    monitor = spectrum_monitor.SpectrumMonitor(IMAGES, every_n_steps=1, rank_fraction=0.25, patience=2)
    drive(monitor, healthy, 6)
    assert not monitor.collapsed and not healthy.stop_training and len(monitor.history) == 6

    collapsed = Model(rank_k_kernel(1))
    warn = spectrum_monitor.SpectrumMonitor(IMAGES, every_n_steps=1, rank_fraction=0.25, patience=2, action="warn")
    drive(warn, collapsed, 6)
    assert warn.collapsed and warn.collapsed_at_step == 2 and not collapsed.stop_training


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="rank_fraction"):
        spectrum_monitor.SpectrumMonitor(IMAGES, rank_fraction=2)
    with pytest.raises(ValueError, match="images must be"):
        spectrum_monitor.SpectrumMonitor(IMAGES[:1])
    with pytest.raises(ValueError, match="every_n_steps"):
        spectrum_monitor.SpectrumMonitor(IMAGES, every_n_steps=0)
