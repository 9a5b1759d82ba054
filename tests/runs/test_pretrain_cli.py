"""simsiam-pretrain end to end on tiny settings: run directory, resume, init_from, errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, tiny_config

from simsiam_tf.errors import RunError
from simsiam_tf.runs import pretrain

TINY_FLAGS = [
    "--width_multiplier=0.125",
    "--dim=32",
    "--pred_dim=16",
    "--image_size=16",
    "--num_train_examples=48",
    "--num_eval_examples=24",
    "--batch_size=16",
    "--epochs=2",
    "--checkpoint_every_steps=2",
    "--log_every_steps=1",
    "--verbose=2",
    "--export=false",
]


def run_cli(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "simsiam_tf.cli.pretrain", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )


def event_tags(directory):
    tags = set()
    for root, _, files in os.walk(directory):
        for name in files:
            if name.startswith("events.out.tfevents"):
                for record in tf.data.TFRecordDataset(os.path.join(root, name)):
                    event = tf.compat.v1.Event.FromString(record.numpy())
                    tags.update(v.tag for v in event.summary.value)
    return tags


@pytest.mark.slow
def test_cli_writes_the_run_directory_and_rerun_resumes(tmp_path):
    model_dir = tmp_path / "run"
    result = run_cli(f"--model_dir={model_dir}", "--evaluate", "--probe_epochs=2", "--knn_k=5", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SimSiam" in result.stdout and "random init" in result.stdout

    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["step"] == metrics["total_steps"] == 6
    assert -1.0 <= metrics["loss"] <= 1.0
    for key in ("knn_top1", "probe_top1", "random_init_knn_top1", "random_init_probe_top1"):
        assert 0.0 <= metrics[key] <= 1.0
    flags_cfg = (model_dir / "flags.cfg").read_text()
    assert "--batch_size=16" in flags_cfg and "--dim=32" in flags_cfg
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-6")
    assert {"loss", "z_std", "learning_rate"} <= event_tags(model_dir / "logs" / "train")
    history = json.loads((model_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]

    # The resolved flagfile repeats the run; the run is complete, so it only re-reports.
    again = run_cli(f"--flagfile={model_dir / 'flags.cfg'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((model_dir / "metrics.json").read_text())["step"] == 6


def test_init_from_loads_weights_but_not_the_step(tmp_path):
    source = tiny_config(tmp_path / "source", epochs=1)
    pretrain.run(source)
    target = tiny_config(tmp_path / "target", epochs=1, init_from=str(tmp_path / "source"))
    metrics = pretrain.run(target)
    assert metrics["step"] == 3

    other_width = tiny_config(
        tmp_path / "other", epochs=1, init_from=str(tmp_path / "source"), **{"model.width_multiplier": 0.25}
    )
    with pytest.raises(RunError, match="does not fit this SimSiam model"):
        pretrain.run(other_width)
    with pytest.raises(RunError, match="no checkpoint found at"):
        pretrain.run(tiny_config(tmp_path / "none", init_from=str(tmp_path / "missing")))


def test_batch_larger_than_the_dataset_is_a_clear_error(tmp_path):
    # Known from the flags alone: refused by validation, before any data is read.
    with pytest.raises(ValueError, match="batch_size 64 is larger than the training set"):
        pretrain.run(tiny_config(tmp_path / "run", batch_size=64, **{"data.num_train_examples": 32}))
    # A folder smaller than the batch is only known once it is read.
    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(np.zeros((16, 16, 3), np.uint8)).numpy())
    folder_config = tiny_config(
        tmp_path / "run2",
        batch_size=4,
        **{
            "data.dataset": "folder",
            "data.data_dir": str(tmp_path / "images"),
            "data.num_train_examples": None,
        },
    )
    with pytest.raises(RunError, match="batch_size 4 is larger than the training set"):
        pretrain.run(folder_config)


def test_invalid_flags_fail_fast():
    result = run_cli("--batch_size=1", "--dry_run")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: batch_size must be at least 2")
    result = run_cli("--crop_scale=0.2", "--dry_run")
    assert result.returncode == 2
    assert "--crop_scale must be 2 comma-separated numbers" in result.stderr


def write_quadrant_folder(root, per_class, seed):
    """4 classes, a brighter 8x8 square in quadrant c of a noisy 16x16 image: separable in pixel space."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(4):
        row, col = divmod(c, 2)
        os.makedirs(root / f"class{c}", exist_ok=True)
        for i in range(per_class):
            image = rng.uniform(0.0, 1.0, (16, 16, 3))
            image[row * 8 : row * 8 + 8, col * 8 : col * 8 + 8] += 0.5
            image = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
            (root / f"class{c}" / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
            images.append(image.astype(np.float32) / 255)
            labels.append(c)
    return np.asarray(images), np.asarray(labels)


@pytest.mark.slow
def test_evaluation_puts_raw_pixels_beside_random_init_and_says_when_they_win(tmp_path):
    train_x, train_y = write_quadrant_folder(tmp_path / "data" / "train", 12, seed=0)
    test_x, test_y = write_quadrant_folder(tmp_path / "data" / "test", 6, seed=1)
    model_dir = tmp_path / "run"
    flags = [f for f in TINY_FLAGS if not f.startswith(("--num_", "--epochs"))]
    result = run_cli(
        f"--model_dir={model_dir}",
        "--dataset=folder",
        f"--data_dir={tmp_path / 'data'}",
        "--epochs=1",
        "--evaluate",
        "--probe_epochs=20",
        "--knn_k=5",
        *flags,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())

    # The oracle: 1-nearest-neighbour by cosine on the standardised pixels, in NumPy.
    flat = train_x.reshape(len(train_x), -1).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    bank = (flat - mean) / std
    queries = (test_x.reshape(len(test_x), -1) - mean) / std
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    oracle = float(np.mean(train_y[np.argmax(queries @ bank.T, axis=1)] == test_y))
    assert oracle == 1.0 and metrics["pixels_knn_top1"] == oracle
    assert metrics["pixels_probe_top1"] == 1.0

    # Three steps of pretraining leave an encoder about as blind to position as at init.
    assert metrics["knn_top1"] < 1.0
    pixel_warnings = [w for w in metrics["warnings"] if "than raw pixels" in w]
    assert len(pixel_warnings) == 1
    assert pixel_warnings[0].startswith(
        f"the trained encoder is not better than raw pixels on this data: kNN top-1 {metrics['knn_top1']:.3f} vs "
        "1.000 for raw pixels"
    )
    assert f"warning: {pixel_warnings[0]}" in result.stdout.splitlines()
    assert any(line.split() == ["SimSiam", "random", "init", "raw", "pixels"] for line in result.stdout.splitlines())


def test_train_steps_sets_whole_epochs_from_the_training_set_size(tmp_path, capsys):
    # 48 images in batches of 16: 3 steps per epoch, so 7 steps need 3 epochs (9 steps)
    metrics = pretrain.run(tiny_config(tmp_path / "run", train_steps=7, epochs=50))
    assert metrics["total_steps"] == 9 and metrics["step"] == 9
    assert "train_steps 7: 3 epochs of 3 steps = 9 steps (48 images, batch 16)" in capsys.readouterr().out
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 3  # one record per epoch
    # The warmup must fit in the epochs that train_steps gives, which only the data can tell.
    with pytest.raises(RunError, match="warmup_epochs=3 is not below the 2 epoch"):
        pretrain.run(tiny_config(tmp_path / "run2", train_steps=6, warmup_epochs=3))
    with pytest.raises(ValueError, match="train_steps must be at least 1"):
        tiny_config(tmp_path / "run3", train_steps=0).validate()
