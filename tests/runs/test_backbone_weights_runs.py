"""Pretraining from backbone weights: a .weights.h5 for --init_from, a mismatched one, ImageNet without network."""

import os
import urllib.error

import keras
import numpy as np
import pytest

from simsiam_tf import config
from simsiam_tf.errors import RunError
from simsiam_tf.models import backbones
from simsiam_tf.runs import pretrain


def _tiny(model_dir, **changes):
    base = {
        "runtime.model_dir": str(model_dir),
        "runtime.verbose": 0,
        "model.backbone": "small_vgg",
        "model.width_multiplier": 0.125,
        "model.dim": 16,
        "model.pred_dim": 8,
        "data.image_size": 16,
        "data.num_train_examples": 32,
        "data.num_eval_examples": 16,
        "batch_size": 16,
        "train_steps": 1,
        "evaluate": False,
        "export": False,
        "knn_every": 0,
    }
    base.update(changes)
    return config.replace(config.PretrainConfig(), **base)


def test_init_from_a_backbone_weights_file_starts_the_encoder_from_it(tmp_path):
    source = backbones.build_backbone("small_vgg", width_multiplier=0.125)
    rng = np.random.default_rng(0)
    for w in source.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    path = str(tmp_path / "start.weights.h5")
    source.save_weights(path)
    # lr 1e-12: one step leaves the weights where they started (to float32 precision).
    run = _tiny(tmp_path / "run", init_from=path, base_lr=1e-12, weight_decay=0.0)
    captured = {}
    pretrain.run(run, callbacks=[_Capture(captured)])
    trained = captured["model"].backbone
    for a, b in zip(source.trainable_weights, trained.trainable_weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6, err_msg=a.path)


class _Capture(keras.callbacks.Callback):
    """Keeps the model the run trains."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def on_train_end(self, logs=None):
        self.out["model"] = self.model


def test_init_from_a_mismatched_weights_file_is_refused_with_the_shapes(tmp_path):
    path = str(tmp_path / "wider.weights.h5")
    backbones.build_backbone("small_vgg", width_multiplier=0.25).save_weights(path)
    run_dir = tmp_path / "run"
    with pytest.raises(RunError) as err:
        pretrain.run(_tiny(run_dir, init_from=path))
    assert "(3, 3, 3, 16)" in str(err.value) and "(3, 3, 3, 8)" in str(err.value)
    assert not os.path.exists(run_dir)  # a failed start leaves nothing behind


def test_imagenet_weights_without_network_stop_the_run_before_it_writes(tmp_path, monkeypatch):
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    (tmp_path / "keras_home").mkdir()
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras_home"))

    def no_network(url, target, *args):
        raise urllib.error.URLError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    run_dir = tmp_path / "run"
    run = _tiny(
        run_dir,
        **{"model.backbone": "keras:MobileNetV3Small", "model.backbone_weights": "imagenet", "data.image_size": 32},
    )
    with pytest.raises(RunError, match="copy it to " + str(tmp_path / "keras_home" / "models")):
        pretrain.run(run)
    assert not os.path.exists(run_dir)
