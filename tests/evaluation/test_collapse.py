"""The collapse alarm end to end: --on_collapse=stop|warn|ignore, checkpoints, metrics.json.

The runs drop stop-gradient *and* the heads' BatchNorm: BN at the projector output
standardises every channel over the batch, which keeps the normalised z-std near 1 for
many steps even without stop-gradient, while without BN such a run collapses within
a few steps. `--collapse_threshold=0.2` suits the 32-wide output (one channel left
alive would read 1/sqrt(32) = 0.18).
"""

import json
import logging as py_logging
import os
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from simsiam_tf import config
from simsiam_tf.evaluation import monitor
from simsiam_tf.runs import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLAPSING = {
    "width_multiplier": 0.125,
    "dim": 32,
    "pred_dim": 16,
    "projector_layers": 2,
    "image_size": 16,
    "num_train_examples": 64,
    "batch_size": 16,
    "base_lr": 0.5,
    "checkpoint_every_steps": 1,
    "log_every_steps": 1,
    "stop_gradient": False,
    "heads_bn": False,
    "collapse_threshold": 0.2,
    "collapse_patience": 3,
    "evaluate": False,
    "export": False,
    "knn_every": 0,
}
SECTIONS = {
    "width_multiplier": "model",
    "dim": "model",
    "pred_dim": "model",
    "projector_layers": "model",
    "stop_gradient": "model",
    "heads_bn": "model",
    "image_size": "data",
    "num_train_examples": "data",
}


def checkpoint_steps(model_dir):
    folder = os.path.join(model_dir, "checkpoints")
    return sorted(int(f[len("ckpt-") : -len(".index")]) for f in os.listdir(folder) if f.endswith(".index"))


@pytest.mark.slow
def test_stop_ends_with_exit_code_3_and_keeps_the_checkpoint_from_before_the_collapse(tmp_path):
    model_dir = tmp_path / "run"
    flags = [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in COLLAPSING.items()]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simsiam_tf.cli.pretrain",
            f"--model_dir={model_dir}",
            "--epochs=5",
            "--verbose=0",
            "--on_collapse=stop",
            *flags,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 3, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: representation collapsed at step ")
    assert "flags/ablation_no_stop_gradient.cfg" in last_line

    metrics = json.loads((model_dir / "metrics.json").read_text())
    step = metrics["collapsed_at_step"]
    assert metrics["collapsed"] is True and metrics["step"] == step < metrics["total_steps"] == 20
    assert last_line == f"error: {metrics['collapse_message']}"
    assert f"at step {step}:" in last_line
    # One check per step: the checks of steps step-2, step-1, step read collapsed. The newest
    # checkpoint is the one just before the first of them; nothing after it was written.
    first_collapsed_check = step - COLLAPSING["collapse_patience"] + 1
    assert first_collapsed_check > 1
    assert checkpoint_steps(model_dir)[-1] == first_collapsed_check - 1
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith(f"ckpt-{first_collapsed_check - 1}")


def collapsing_config(model_dir, action):
    changes = {(SECTIONS[k] + "." if k in SECTIONS else "") + k: v for k, v in COLLAPSING.items()}
    changes.update(
        {
            "runtime.model_dir": str(model_dir),
            "runtime.verbose": 0,
            "epochs": 3,
            "on_collapse": action,
            "checkpoint_every_steps": 100,
        }
    )
    return config.replace(config.PretrainConfig(), **changes)


@pytest.mark.slow
@pytest.mark.parametrize("action", ["warn", "ignore"])
def test_warn_and_ignore_finish_the_run_and_record_the_collapse(tmp_path, caplog, action):
    with caplog.at_level(py_logging.WARNING):
        metrics = pretrain.run(collapsing_config(tmp_path / action, action))
    assert metrics["step"] == metrics["total_steps"] == 12
    assert metrics["collapsed"] is True and 3 <= metrics["collapsed_at_step"] < 12
    on_disk = json.loads((tmp_path / action / "metrics.json").read_text())
    assert on_disk["collapsed"] is True and on_disk["collapsed_at_step"] == metrics["collapsed_at_step"]
    warnings = [r.getMessage() for r in caplog.records if "representation collapsed at step" in r.getMessage()]
    assert len(warnings) == (1 if action == "warn" else 0)
    # The run goes on to its end and saves its final checkpoint.
    assert checkpoint_steps(tmp_path / action) == [12]


class RunningMeanZStd(keras.Model):
    """Reports z_std as Keras metric trackers do: the mean since the epoch began."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = tf.constant(schedule, tf.float32)
        self.w = self.add_weight(shape=(), initializer="ones", name="w")
        self.tracker = keras.metrics.Mean(name="z_std")

    @property
    def metrics(self):
        return [self.tracker]

    def train_step(self, data):
        index = tf.minimum(self.optimizer.iterations, len(self.schedule) - 1)
        self.tracker.update_state(tf.gather(self.schedule, index))
        with tf.GradientTape() as tape:
            loss = tf.square(self.w)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, [self.w]), [self.w]))
        return {"z_std": self.tracker.result()}


@pytest.mark.parametrize("running_mean, collapsed_at", [(True, 12), (False, None)])
def test_step_checks_see_a_collapse_that_the_epoch_mean_hides(running_mean, collapsed_at):
    # Healthy for 8 steps, collapsed from step 9 on, in one 20-step epoch: the running mean
    # never drops under 0.1 (8/20 at the end), the mean over each 2-step window does.
    callback = monitor.CollapseMonitor(
        threshold=0.1, patience=2, action="warn", check_every=2, running_mean=running_mean
    )
    model = RunningMeanZStd([1.0] * 8 + [0.0])
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    data = tf.data.Dataset.range(20).map(lambda i: tf.cast(i, tf.float32)).batch(1)
    model.fit(data, epochs=1, callbacks=[callback], verbose=0, shuffle=False)
    assert callback.collapsed_at_step == collapsed_at
