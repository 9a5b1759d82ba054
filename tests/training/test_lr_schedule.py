"""--lr_schedule: the reference's per-epoch cosine (adjust_learning_rate) end to end, and its checks."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import builders, config
from simsiam_tf.evaluation import probe
from simsiam_tf.runs import pretrain


def logged_learning_rates(log_dir):
    """{optimizer step: learning_rate} from the TensorBoard events of a run's train/ folder."""
    rates = {}
    for root, _, files in os.walk(log_dir):
        for name in files:
            if not name.startswith("events.out.tfevents"):
                continue
            for record in tf.data.TFRecordDataset(os.path.join(root, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.tag == "learning_rate":
                        rates[event.step] = float(tf.make_ndarray(value.tensor))
    return rates


def rates_at_steps(optimizer, steps):
    """The optimizer's learning_rate when its step counter is at each of `steps`."""
    out = []
    for k in steps:
        optimizer.iterations.assign(k)
        out.append(float(optimizer.learning_rate.numpy()))
    return out


def reference_rate(init_lr, epoch, epochs):
    # main_simsiam.py / main_lincls.py adjust_learning_rate, called at the start of each epoch.
    return init_lr * 0.5 * (1.0 + np.cos(np.pi * epoch / epochs))


def tiny_pretrain_config(model_dir, **changes):
    base = {
        "runtime.model_dir": str(model_dir),
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "model.dim": 32,
        "model.pred_dim": 16,
        "data.image_size": 16,
        "data.num_train_examples": 48,
        "data.num_eval_examples": 16,
        "batch_size": 16,
        "epochs": 3,
        "checkpoint_every_steps": 100,
        "log_every_steps": 1,
        "evaluate": False,
        "export": False,
        "knn_every": 0,
        "base_lr": 0.5,
    }
    base.update(changes)
    return config.replace(config.PretrainConfig(), **base)


@pytest.mark.slow
def test_epoch_schedule_run_logs_the_reference_rate_at_every_step(tmp_path):
    cfg = tiny_pretrain_config(tmp_path / "run", lr_schedule="epoch")
    pretrain.run(cfg)
    rates = logged_learning_rates(tmp_path / "run" / "logs")
    steps_per_epoch, epochs = 48 // 16, 3
    init_lr = 0.5 * 16 / 256
    assert sorted(rates) == list(range(1, steps_per_epoch * epochs + 1))
    # The rate logged after k updates is the one step k (0-based) uses next: epoch k // S's.
    expected = {k: reference_rate(init_lr, k // steps_per_epoch, epochs) for k in rates}
    np.testing.assert_allclose([rates[k] for k in sorted(rates)], [expected[k] for k in sorted(rates)], rtol=1e-6)
    # Constant within an epoch, three distinct values over the run (the last is 0 after the end).
    assert len({round(v, 9) for v in rates.values()}) == epochs + 1


def test_step_schedule_decays_within_an_epoch():
    cfg = tiny_pretrain_config("unused", lr_schedule="step").validate()
    optimizer = builders.build_pretrain_optimizer(cfg, _NoPredictor(), total_steps=9, steps_per_epoch=3)
    init_lr = 0.5 * 16 / 256
    rates = rates_at_steps(optimizer, range(9))
    np.testing.assert_allclose(rates, [init_lr * 0.5 * (1 + math.cos(math.pi * k / 9)) for k in range(9)], rtol=1e-6)


class _NoPredictor:
    predictor = None


def test_linear_optimizer_in_epoch_mode_follows_the_reference():
    cfg = config.LinearConfig(init_from="run", optimizer="lars", batch_size=512, epochs=4, lr_schedule="epoch")
    optimizer = builders.build_linear_optimizer(cfg, total_steps=20, steps_per_epoch=5)
    init_lr = 0.1 * 512 / 256
    np.testing.assert_allclose(
        rates_at_steps(optimizer, range(20)), [reference_rate(init_lr, k // 5, 4) for k in range(20)], rtol=1e-6
    )
    with pytest.raises(ValueError, match="steps_per_epoch"):
        builders.build_linear_optimizer(cfg, total_steps=20)


def test_probe_on_features_in_epoch_mode_sets_the_rate_once_per_epoch():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)).astype(np.float32), rng.integers(0, 2, 40)
    seen = []

    class Record(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(self.model.optimizer.learning_rate.numpy()))

    probe.train_linear_on_features(
        x, y, x, y, 2, epochs=3, batch_size=16, base_lr=0.3, lr_schedule="epoch", callbacks=[Record()]
    )
    # 40 examples in batches of 16: 3 steps per epoch, the last one partial.
    np.testing.assert_allclose(seen, [reference_rate(0.3, k // 3, 3) for k in range(9)], rtol=1e-6)


def test_epoch_schedule_needs_whole_warmup_epochs():
    with pytest.raises(ValueError, match="lr_schedule=epoch.*whole epochs"):
        tiny_pretrain_config("unused", lr_schedule="epoch", warmup_epochs=0.5).validate()
    tiny_pretrain_config("unused", lr_schedule="epoch", warmup_epochs=1.0).validate()
    with pytest.raises(ValueError, match="lr_schedule must be one of step, epoch"):
        tiny_pretrain_config("unused", lr_schedule="batch").validate()
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        config.LinearConfig(init_from="run", lr_schedule="cosine").validate()


@pytest.mark.parametrize(
    "recipe", ["imagenet_resnet50", "cifar10_resnet18", "imagenet_resnet50_linear", "cifar10_resnet18_linear"]
)
def test_recipes_that_claim_the_reference_schedule_set_it(recipe):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "flags", recipe + ".cfg")) as f:
        assert "--lr_schedule=epoch" in f.read().splitlines()
