"""The jobs' hooks: the caller's Keras callbacks, the augmentation image in TensorBoard, progress output."""

import glob
import io
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simsiam_tf import augment as augment_lib
from simsiam_tf import config, progress
from simsiam_tf.runs import linear, pretrain, verify
from simsiam_tf.training import view_summary
from simsiam_tf.training.callbacks import LOG_SUBDIR

IMAGE_SIZE = 16
BATCH = 16


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, sorted(logs or {})))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(model_dir, the recorder given to pretrain.run) of a tiny two-epoch run."""
    model_dir = str(tmp_path_factory.mktemp("pretrain"))
    changes = {
        "runtime.model_dir": model_dir,
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "model.dim": 32,
        "model.pred_dim": 16,
        "data.image_size": IMAGE_SIZE,
        "data.num_train_examples": 2 * BATCH,
        "data.num_eval_examples": 32,
        "batch_size": BATCH,
        "epochs": 2,
        "evaluate": False,
        "export": False,
        "knn_every": 0,
    }
    recorder = EpochRecorder()
    pretrain.run(config.replace(config.PretrainConfig(), **changes), callbacks=[recorder])
    return model_dir, recorder


def test_pretrain_adds_the_callers_callbacks(pretrained):
    _, recorder = pretrained
    assert [epoch for epoch, _ in recorder.epochs] == [0, 1]
    for _, keys in recorder.epochs:
        assert "loss" in keys


def _image_summaries(log_dir):
    found = []
    for path in glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == view_summary.SUMMARY_NAME:
                    found.append((event.step, value))
    return found


def test_tensorboard_shows_training_images_beside_their_two_views(pretrained):
    model_dir, _ = pretrained
    found = _image_summaries(os.path.join(model_dir, LOG_SUBDIR))
    assert len(found) == 1
    step, value = found[0]
    assert step == 0
    # An image summary's tensor: width, height, then the PNG.
    width, height, png = value.tensor.string_val
    tile = IMAGE_SIZE + view_summary.GAP
    rows, columns = view_summary.NUM_IMAGES, 3
    assert (int(height), int(width)) == (rows * tile - view_summary.GAP, columns * tile - view_summary.GAP)
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape[:2] == (int(height), int(width))


def test_view_grid_rows_are_image_then_its_views():
    images = [np.full((20, 24, 3), 60 * i, np.uint8) for i in range(3)]
    plain = augment_lib.TwoViewAugment(
        8, crop_scale=(1.0, 1.0), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, flip_prob=0.0
    )
    grid = view_summary.view_grid(images, plain)
    tile = 8 + view_summary.GAP
    assert grid.shape == (3 * tile - view_summary.GAP, 3 * tile - view_summary.GAP, 3)
    for i in range(3):
        for j in range(3):
            # A constant image stays constant under any crop and resize.
            np.testing.assert_allclose(
                grid[i * tile : i * tile + 8, j * tile : j * tile + 8], 60 * i / 255.0, atol=1e-5
            )
    np.testing.assert_array_equal(grid[8:tile], 1.0)  # the white gap between rows


def test_linear_adds_the_callers_callbacks(pretrained, tmp_path):
    model_dir, _ = pretrained
    recorder = EpochRecorder()
    changes = {
        "runtime.model_dir": str(tmp_path / "linear"),
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "data.image_size": IMAGE_SIZE,
        "data.num_train_examples": 32,
        "data.num_eval_examples": 32,
        "batch_size": BATCH,
        "epochs": 2,
        "compare_baselines": False,
    }
    linear.run(config.replace(config.LinearConfig(init_from=model_dir), **changes), callbacks=[recorder])
    assert [epoch for epoch, _ in recorder.epochs] == [0, 1]
    assert all("loss" in keys for _, keys in recorder.epochs)


def test_verify_adds_the_callers_callbacks(pretrained, tmp_path):
    model_dir, _ = pretrained
    recorder = EpochRecorder()
    changes = {
        "runtime.model_dir": str(tmp_path / "verify"),
        "runtime.verbose": 0,
        "model.width_multiplier": 0.125,
        "data.image_size": IMAGE_SIZE,
        "data.num_train_examples": 100,
        "data.num_eval_examples": 100,
        "embedding_dim": 8,
        "hidden_dim": 16,
        "batch_size": 4,
        "epochs": 2,
        "steps_per_epoch": 1,
        "num_val_pairs": 20,
        "num_eval_pairs": 20,
        "num_trials": 5,
    }
    verify.run(config.replace(config.VerifyConfig(init_from=model_dir), **changes), callbacks=[recorder])
    assert [epoch for epoch, _ in recorder.epochs] == [0, 1]
    assert all("loss" in keys for _, keys in recorder.epochs)


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_verbose_auto_is_a_bar_on_a_terminal_and_epoch_lines_in_a_log(monkeypatch):
    monkeypatch.delitem(__import__("sys").modules, "ipykernel", raising=False)
    assert progress.resolve_verbose("auto", _Stream(tty=True)) == 1
    assert progress.resolve_verbose("auto", _Stream(tty=False)) == 2
    assert progress.resolve_verbose("0", _Stream(tty=True)) == 0
    assert progress.resolve_verbose(2, _Stream(tty=True)) == 2
    with pytest.raises(ValueError, match="verbose must be auto, 0, 1 or 2, got 3"):
        progress.resolve_verbose(3)
    assert config.RuntimeConfig().verbose == "auto"
    config.RuntimeConfig(verbose="2").validate()
    with pytest.raises(ValueError, match="verbose must be auto, 0, 1 or 2"):
        config.RuntimeConfig(verbose=5).validate()


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("tty", [True, False])
def test_progress_is_quiet_when_quick_redrawn_on_a_terminal_and_sparse_in_a_log(monkeypatch, tty):
    monkeypatch.delitem(__import__("sys").modules, "ipykernel", raising=False)
    quick, clock = _Stream(tty), _Clock()
    with progress.Progress(100, "scan", stream=quick, clock=clock) as shown:
        for _ in range(100):
            clock.now += 0.01
            shown.update()
    assert quick.getvalue() == ""  # one second in all: nothing shown

    slow, clock = _Stream(tty), _Clock()
    with progress.Progress(1000, "scan", stream=slow, clock=clock) as shown:
        for _ in range(1000):
            clock.now += 0.1  # 100 s in all
            shown.update()
    text = slow.getvalue()
    assert text.endswith("scan: 1000/1000 (100%), 100 s\n")
    if tty:
        assert text.count("\n") == 1 and text.count("\r") > 900  # one line, redrawn
    else:
        assert "\r" not in text
        assert 3 <= text.count("\n") <= 5  # at 2 s, then every 30 s, and the last


def test_the_folder_check_and_feature_extraction_show_progress(tmp_path, monkeypatch, capsys):
    from simsiam_tf.data import load_source, make_eval_dataset
    from simsiam_tf.evaluation import monitor

    monkeypatch.setattr(progress, "QUIET_SECONDS", 0.0)  # show even a quick task
    monkeypatch.delitem(__import__("sys").modules, "ipykernel", raising=False)
    for i in range(5):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    source = load_source("folder", data_dir=str(tmp_path), image_size=8)
    assert capsys.readouterr().out.splitlines()[-1].startswith("checking image files: 5/5 (100%)")
    encoder = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D()])
    features, _ = monitor.extract_features(
        encoder, make_eval_dataset(source, 2, 8), normalize=False, progress_label="features (batches)"
    )
    assert features.shape == (5, 3)
    assert capsys.readouterr().out.splitlines()[-1].startswith("features (batches): 3/3 (100%)")
