"""simsiam-verify on a folder of hostile files (tests/data/hostile_images.py): with on_corrupt=skip it
finishes and records what it skipped by reason in metrics.json; with on_corrupt=error it stops at the first
bad file, naming it (the other tools: test_hostile_folder_tools.py)."""

import os
import sys

import pytest

from simsiam_tf import config
from simsiam_tf.errors import RunError
from simsiam_tf.runs import verify

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile_images import SKIPPED, make_hostile_folder  # noqa: E402
from test_hostile_folder_tools import check_metrics, first_bad, folder_data  # noqa: E402


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return make_hostile_folder(str(tmp_path_factory.mktemp("hostile") / "images"), good_per_class=8)


def verify_config(model_dir, root, on_corrupt="skip"):
    changes = {
        "runtime.model_dir": str(model_dir),
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "embedding_dim": 8,
        "hidden_dim": 16,
        "batch_size": 4,
        "epochs": 1,
        "steps_per_epoch": 1,
        "num_val_pairs": 10,
        "num_eval_pairs": 10,
        "num_trials": 3,
        "closed_set": True,  # two classes: too few to hold one out
        **folder_data(root, on_corrupt),
    }
    return config.replace(config.VerifyConfig(), **changes)


def test_verify_finishes_and_records_what_it_skipped(hostile, tmp_path):
    verify.run(verify_config(tmp_path / "verify", hostile.root))
    check_metrics(tmp_path / "verify", hostile, "train", "eval")


def test_error_mode_stops_verify_at_the_first_bad_file(hostile, tmp_path):
    path = first_bad(hostile)
    with pytest.raises((ValueError, RunError)) as raised:
        verify.run(verify_config(tmp_path / "verify", hostile.root, "error"))
    message = str(raised.value)
    assert f"image file {path}: {SKIPPED[hostile.kinds[path]]} (" in message and "--on_corrupt=skip" in message
