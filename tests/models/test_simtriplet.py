"""SimTriplet: the model's step, stop-gradient on every target, and --method=simtriplet end to end.

The loss itself is checked against NumPy in test_losses.py.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import config, losses
from simsiam_tf.models.simtriplet import SimTriplet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 16


def small_backbone():
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, strides=2, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="small",
    )


def views(n, count=3, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(rng.random((n, SIZE, SIZE, 3), dtype=np.float32) for _ in range(count))


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_on_every_target(stop_gradient):
    keras.utils.set_random_seed(0)
    model = SimTriplet(small_backbone(), dim=16, pred_dim=4, stop_gradient=stop_gradient)
    x1, x2, x3 = views(4)
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        p1, p2, p3, z1, z2, z3 = model.forward_triplet(x1, x2, x3, training=True)
        # Predictions held constant: whatever gradient remains came through a z.
        through_targets = model.triplet_loss(*[tf.stop_gradient(p) for p in (p1, p2, p3)], z1, z2, z3)
        loss = model.triplet_loss(p1, p2, p3, z1, z2, z3)
    grads = tape.gradient(through_targets, variables)
    largest = max(0.0 if g is None else float(tf.reduce_max(tf.abs(g))) for g in grads)
    assert (largest == 0.0) if stop_gradient else (largest > 0.0)
    # Each target z_i alone: its gradient is exactly zero with stop-gradient.
    for z in (z1, z2, z3):
        g = tape.gradient(through_targets, z)
        assert (g is None or not np.any(g.numpy())) if stop_gradient else np.any(g.numpy())
    np.testing.assert_allclose(loss.numpy(), losses.simtriplet_loss(p1, p2, p3, z1, z2, z3).numpy(), rtol=1e-6)
    # The neighbour's view reaches the loss through its prediction p3 either way.
    x3_t = tf.constant(x3)
    with tf.GradientTape() as tape3:
        tape3.watch(x3_t)
        loss3 = model.triplet_loss(*model.forward_triplet(x1, x2, x3_t, training=True))
    assert np.any(tape3.gradient(loss3, x3_t).numpy())


def test_fit_trains_on_triplets_with_finite_loss_and_the_third_view_counts():
    keras.utils.set_random_seed(0)
    model = SimTriplet(small_backbone(), dim=16, pred_dim=4)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    before = [v.numpy().copy() for v in model.trainable_variables]
    data = tf.data.Dataset.from_tensor_slices(views(32)).batch(8)
    history = model.fit(data, epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    assert {"loss", "z_std", "center_norm", "residual_norm"} <= set(history.history)
    moved = [not np.array_equal(a, v.numpy()) for a, v in zip(before, model.trainable_variables)]
    assert all(moved)

    x1, x2, x3 = views(8, seed=1)
    same = model.test_step((x1, x2, x3))["loss"]
    other = model.test_step((x1, x2, views(8, count=1, seed=2)[0]))["loss"]
    assert float(same) != float(other)
    with pytest.raises(ValueError, match=r"SimTriplet expects batches \(x1, x2, x3\)"):
        model.test_step((x1, x2))


def test_config_needs_tiles_and_a_pattern_with_the_named_groups():
    base = config.replace(config.PretrainConfig(), method="simtriplet", **{"data.dataset": "synthetic_tiles"})
    assert base.validate()
    with pytest.raises(ValueError, match="method=simtriplet needs tiles"):
        config.replace(base, **{"data.dataset": "synthetic"}).validate()
    folder = config.replace(base, **{"data.dataset": "folder", "data.data_dir": "tiles"})
    with pytest.raises(ValueError, match="lacks the named group"):
        config.replace(folder, tile_pattern=r"(?P<group>.+)\.png").validate()
    assert config.replace(folder, tile_pattern=r"(?P<group>.+)\.png", neighbourhood="group").validate()
    with pytest.raises(ValueError, match="not a valid regular expression"):
        config.replace(folder, tile_pattern="(?P<group>").validate()
    with pytest.raises(ValueError, match="neighbourhood must be one of 4, 8, group"):
        config.replace(base, neighbourhood="6").validate()


@pytest.mark.slow
def test_cli_pretrains_simtriplet_on_synthetic_tiles(tmp_path):
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simsiam_tf.cli.pretrain",
            "--method=simtriplet",
            "--dataset=synthetic_tiles",
            "--tiles_per_side=3",
            "--neighbourhood=8",
            f"--model_dir={model_dir}",
            "--width_multiplier=0.125",
            "--dim=32",
            "--pred_dim=16",
            "--image_size=16",
            "--num_train_examples=48",
            "--num_eval_examples=27",
            "--batch_size=16",
            "--epochs=2",
            "--knn_every=1",
            "--knn_k=5",
            "--checkpoint_every_steps=3",
            "--log_every_steps=1",
            "--verbose=0",
            "--evaluate=false",
            "--export=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["step"] == metrics["total_steps"] == 6
    assert np.isfinite(metrics["loss"]) and -2.0 <= metrics["loss"] <= 2.0
    assert 0.0 <= metrics["knn_top1"] <= 1.0
    flags_cfg = (model_dir / "flags.cfg").read_text()
    assert "--method=simtriplet" in flags_cfg and "--neighbourhood=8" in flags_cfg
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-6")

    bad = subprocess.run(
        [sys.executable, "-m", "simsiam_tf.cli.pretrain", "--method=simtriplet", "--dataset=synthetic", "--dry_run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "method=simtriplet needs tiles" in bad.stderr
