"""The linear probe reports the final epoch and, as the reference (main_lincls.py's best_acc1), the best epoch."""

import json

import keras
import numpy as np
import pytest
from conftest import tiny_pretrain_run

from simsiam_tf import config
from simsiam_tf.evaluation import probe
from simsiam_tf.runs import linear

TINY_DATA = {"data.image_size": 16, "data.num_train_examples": 64, "data.num_eval_examples": 30}


def test_epoch_evaluation_scores_every_image_the_last_partial_batch_included():
    rng = np.random.default_rng(1)
    features, labels = rng.normal(size=(37, 5)).astype(np.float32), rng.integers(0, 3, 37)
    classifier = probe.build_linear_classifier(3, 5)
    kernel, bias = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    classifier.set_weights([kernel, bias])
    logs = {}
    probe.EpochEvaluation(classifier, features, labels, batch_size=16).on_epoch_end(0, logs)
    predicted = np.argmax(features @ kernel + bias, axis=1)
    assert logs["val_top1"] == pytest.approx(np.mean(predicted == labels))
    top2 = np.argsort(-(features @ kernel + bias), axis=1)[:, :2]
    assert logs["val_top5"] == 1.0  # 3 classes: all within the top 5
    assert np.mean(np.any(top2 == labels[:, None], axis=1)) >= logs["val_top1"]


def test_best_epoch_takes_the_highest_and_the_earliest_of_ties():
    history = [
        {"epoch": 1, "val_top1": 0.3},
        {"epoch": 2, "val_top1": 0.5},
        {"epoch": 3, "val_top1": 0.5},
        {"epoch": 4, "val_top1": 0.4},
    ]
    assert probe.best_epoch(history) == (0.5, 2)
    assert probe.best_epoch([{"epoch": 1, "loss": 1.0}]) is None


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return tiny_pretrain_run(tmp_path_factory, **{k.split(".", 1)[1]: v for k, v in TINY_DATA.items()})


@pytest.mark.slow
@pytest.mark.parametrize("augment", [True, False], ids=["end_to_end", "cached"])
def test_metrics_hold_the_final_and_the_best_epoch(pretrained, tmp_path, augment):
    cfg = config.replace(
        config.LinearConfig(init_from=pretrained),
        **{
            "runtime.model_dir": str(tmp_path),
            "runtime.verbose": 0,
            "model.width_multiplier": 0.125,
            "batch_size": 16,
            "epochs": 3,
            "augment": augment,
            "compare_baselines": False,
            "eval_batch_size": 16,
            "base_lr": 3.0,
            "optimizer": "sgd",
            "standardize": False,
            **TINY_DATA,
        },
    )
    metrics = linear.run(cfg)
    history = json.load(open(tmp_path / "history.json"))
    scores = [record["val_top1"] for record in history]
    assert [record["epoch"] for record in history] == [1, 2, 3]
    assert metrics["top1_best"] == max(scores)
    assert scores[metrics["best_epoch"] - 1] == max(scores) and max(scores) not in scores[: metrics["best_epoch"] - 1]
    # The last epoch's evaluation is the final classifier's: the same number as top1.
    assert scores[-1] == pytest.approx(metrics["top1"])
    # Every one of the 30 evaluation images counts (batches of 16: the last has 14).
    for value in scores + [metrics["top1"]]:
        assert value * 30 == pytest.approx(round(value * 30))
    assert json.load(open(tmp_path / "metrics.json"))["top1_best"] == metrics["top1_best"]
    assert "best epoch's top-1" in linear.summary(metrics)
    keras.backend.clear_session()
