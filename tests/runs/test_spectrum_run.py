"""The spectrum monitor in simsiam-pretrain: metrics.json, --keep_best=rank, the dimensional-collapse alarm's exit."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from simsiam_tf.errors import CollapseError
from simsiam_tf.runs import pretrain


def checkpoint_variables(prefix, weights_only=True):
    # A variable is stored once, under the first path to it: in a run's checkpoint many weights
    # are under the optimizer's list of the variables it trains.
    reader = tf.train.load_checkpoint(prefix)
    return {
        name: reader.get_tensor(name)
        for name, _ in tf.train.list_variables(prefix)
        if not weights_only or (name.startswith("model/") and "optimizer" not in name)
    }


def fingerprint(value):
    value = np.asarray(value)
    return value.shape, value.dtype.str, value.tobytes()


@pytest.mark.slow
def test_keep_best_rank_scores_every_checkpoint_and_keeps_the_highest(tmp_path):
    run = tmp_path / "run"
    # 2 epochs of 3 steps, a checkpoint every 2 steps and at the end: steps 2, 4, 6
    metrics = pretrain.run(tiny_config(run, spectrum_every_steps=2, spectrum_images=40, keep_best="rank"))
    scores = json.loads((run / "checkpoint_scores.json").read_text())
    assert [s["step"] for s in scores] == [2, 4, 6]
    best = max(scores, key=lambda s: s["effective_rank"])
    assert metrics["kept_checkpoint"]["step"] == best["step"]
    assert metrics["kept_checkpoint"]["effective_rank"] == best["effective_rank"]
    # The score of a checkpoint is the projector's rank the monitor read at that step.
    history = {h["step"]: h["projector"]["effective_rank"] for h in metrics["spectrum"]["history"]}
    assert all(history[s["step"]] == s["effective_rank"] for s in scores)
    # best/ holds the weights of that checkpoint.
    kept = checkpoint_variables(str(run / "best" / "weights"))
    saved = checkpoint_variables(str(run / "checkpoints" / f"ckpt-{best['step']}"), weights_only=False)
    assert len(kept) > 10 and not any("optimizer" in k for k in kept)  # weights only
    saved_values = {fingerprint(v) for v in saved.values()}
    assert all(fingerprint(v) in saved_values for v in kept.values())
    others = {
        fingerprint(v)
        for s in scores
        if s["step"] != best["step"]
        for v in checkpoint_variables(str(run / "checkpoints" / f"ckpt-{s['step']}"), weights_only=False).values()
    }
    assert any(fingerprint(v) not in others for v in kept.values())  # not another checkpoint's

    spectrum = metrics["spectrum"]
    assert spectrum["step"] == 6 and spectrum["checks"] == 3
    assert spectrum["projector"]["rank_limit"] == 32 and len(spectrum["projector"]["spectrum"]) == 32
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["spectrum"]["projector"]["effective_rank"] == spectrum["projector"]["effective_rank"]
    assert os.listdir(run / "logs" / "spectrum")


@pytest.mark.slow
def test_the_dimensional_alarm_stops_the_run_with_a_message_naming_the_reading(tmp_path):
    run = tmp_path / "run"
    # every effective rank is below 1.0 x its limit: the alarm's wiring, not a real collapse
    config = tiny_config(
        run, spectrum_every_steps=1, spectrum_images=40, rank_collapse_fraction=1.0, collapse_patience=2
    )
    with pytest.raises(CollapseError, match=r"dimensional collapse at step 2: the projector output's effective rank"):
        pretrain.run(config)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["collapsed"] is True and metrics["collapsed_at_step"] == 2
    assert "1.0 x 32 = 32" in metrics["collapse_message"]


def test_keep_best_rank_needs_the_monitor(tmp_path):
    with pytest.raises(ValueError, match="spectrum_every_steps > 0"):
        tiny_config(tmp_path, keep_best="rank", spectrum_every_steps=0).validate()
