"""The tools that read image folders (simsiam-pretrain, -linear, -embed; -verify in
test_hostile_folder_verify.py), on a folder of hostile files (tests/data/hostile_images.py): with
on_corrupt=skip each finishes and reports what it skipped by reason (logged, and in metrics.json); with
on_corrupt=error each stops at the first bad file, naming it."""

import json
import os
import sys

import pytest

from simsiam_tf import config
from simsiam_tf.config import flags
from simsiam_tf.errors import RunError
from simsiam_tf.runs import embed, linear, pretrain

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data"))
from hostile_images import DECODED, SKIPPED, make_hostile_folder  # noqa: E402


def folder_data(root, on_corrupt):
    return {
        "data.dataset": "folder",
        "data.data_dir": root,
        "data.on_corrupt": on_corrupt,
        "data.holdout_fraction": 0.0,  # every tool reads every file, so that each report is the whole folder's
        "data.image_size": 16,
    }


def pretrain_config(model_dir, root, on_corrupt="skip"):
    changes = {
        "runtime.model_dir": str(model_dir),
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "model.dim": 32,
        "model.pred_dim": 16,
        "batch_size": 8,
        "epochs": 1,
        "evaluate": False,
        "export": False,
        "knn_every": 0,
        **folder_data(root, on_corrupt),
    }
    return config.replace(config.PretrainConfig(), **changes)


def linear_config(run_dir, model_dir, root, on_corrupt="skip"):
    changes = {
        "runtime.model_dir": str(model_dir),
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "batch_size": 8,
        "epochs": 1,
        "augment": False,
        "compare_baselines": False,
        **folder_data(root, on_corrupt),
    }
    return config.replace(config.LinearConfig(init_from=run_dir), **changes)


def embed_config(run_dir, model_dir, root, on_corrupt="skip"):
    data = config.DataConfig(dataset="folder", data_dir=root, on_corrupt=on_corrupt, holdout_fraction=0.0)
    return config.EmbedConfig(
        runtime=config.RuntimeConfig(model_dir=str(model_dir)), data=data, split="all", init_from=run_dir
    )


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return make_hostile_folder(str(tmp_path_factory.mktemp("hostile") / "images"), good_per_class=8)


@pytest.fixture(scope="module")
def pretrained(hostile, tmp_path_factory):
    """The pretraining run on the hostile folder, and the log records it left."""
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("absl").addHandler(handler)
    try:
        run_config = pretrain_config(tmp_path_factory.mktemp("pretrain"), hostile.root)
        pretrain.run(run_config, flags_text=flags.flags_text(run_config))
    finally:
        logging.getLogger("absl").removeHandler(handler)
    return run_config.runtime.model_dir, [r.getMessage() for r in records]


def expected_summary(hostile):
    return f"skipped {sum(hostile.skipped_counts().values())} of {len(hostile.listed)} files: "


def test_pretrain_finishes_and_reports_the_count_by_reason(hostile, pretrained):
    run_dir, messages = pretrained
    assert os.path.isdir(os.path.join(run_dir, "checkpoints"))
    summaries = [m for m in messages if expected_summary(hostile) in m]
    assert summaries and all(f"{n} {reason}" in summaries[0] for reason, n in hostile.skipped_counts().items())
    check_metrics(run_dir, hostile, "train")


def check_metrics(model_dir, hostile, *names):
    with open(os.path.join(model_dir, "metrics.json")) as f:
        skipped = json.load(f)["skipped_files"]
    assert sorted(skipped) == sorted(names)
    for name in names:
        assert skipped[name]["skipped_by_reason"] == hostile.skipped_counts()
        assert skipped[name]["files_listed"] == len(hostile.listed)


def test_linear_finishes_and_records_what_it_skipped(hostile, pretrained, tmp_path):
    linear.run(linear_config(pretrained[0], tmp_path / "linear", hostile.root))
    check_metrics(tmp_path / "linear", hostile, "train", "eval")


def test_embed_finishes_and_records_what_it_skipped(hostile, pretrained, tmp_path):
    metrics = embed.run(embed_config(pretrained[0], tmp_path / "embed", hostile.root))
    assert metrics["num_images"] == len(hostile.paths("good", *DECODED))
    check_metrics(tmp_path / "embed", hostile, "images")


def header_whole(path, kind):
    """Whether a damaged file still holds its whole header (only the decoder can tell it is bad)."""
    if kind not in ("truncated_jpeg", "truncated_png", "bit_flip_png"):
        return False
    with open(path, "rb") as f:
        content = f.read()
    if kind == "truncated_jpeg":
        frame = content.find(b"\xff\xc0")
        return frame >= 0 and len(content) >= frame + 9
    return kind == "bit_flip_png" or (kind == "truncated_png" and len(content) >= 24)


def first_bad(hostile):
    """The first bad file in sorted order that its header gives away: the headers are checked first."""
    return [p for p in hostile.paths(*SKIPPED) if not header_whole(p, hostile.kinds[p])][0]


@pytest.mark.parametrize("tool", ["pretrain", "linear", "embed"])
def test_error_mode_stops_each_tool_at_the_first_bad_file(hostile, pretrained, tmp_path, tool):
    root, out = hostile.root, tmp_path / tool
    jobs = {
        "pretrain": lambda: pretrain.run(pretrain_config(out, root, "error")),
        "linear": lambda: linear.run(linear_config(pretrained[0], out, root, "error")),
        "embed": lambda: embed.run(embed_config(pretrained[0], out, root, "error")),
    }
    path = first_bad(hostile)
    with pytest.raises((ValueError, RunError)) as raised:
        jobs[tool]()
    message = str(raised.value)
    assert f"image file {path}: {SKIPPED[hostile.kinds[path]]} (" in message and "--on_corrupt=skip" in message
