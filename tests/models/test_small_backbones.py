"""The small-image encoders (small_resnet, small_vgg): shapes, parameter counts by hand, export and rebuild."""

import os
import subprocess
import sys

import numpy as np
import pytest

from simsiam_tf import builders, serving
from simsiam_tf import config as config_lib
from simsiam_tf.models import backbones
from simsiam_tf.runs import export as export_job

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _conv(cin, cout, k):
    return cin * cout * k * k  # no bias


def _bn(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


def _small_resnet_params(w):
    w1, w2, w3 = w, 2 * w, 4 * w
    stem = _conv(3, w1, 3) + _bn(w1)
    block1 = _conv(w1, w1, 3) + _bn(w1) + _conv(w1, w1, 3) + _bn(w1)  # identity shortcut
    block2 = _conv(w1, w2, 3) + _bn(w2) + _conv(w2, w2, 3) + _bn(w2) + _conv(w1, w2, 1) + _bn(w2)
    block3 = _conv(w2, w3, 3) + _bn(w3) + _conv(w3, w3, 3) + _bn(w3) + _conv(w2, w3, 1) + _bn(w3)
    return stem + block1 + block2 + block3


def _small_vgg_params(w):
    widths = (w, 2 * w, 4 * w)
    total = _conv(3, w, 3) + _bn(w)
    cin = w
    for c in widths:
        total += _conv(cin, c, 3) + _bn(c) + _conv(c, c, 3) + _bn(c)
        cin = c
    return total


@pytest.mark.parametrize(
    "name, multiplier, expected",
    [
        ("small_resnet", 0.25, _small_resnet_params(16)),
        ("small_resnet", 0.5, _small_resnet_params(32)),
        ("small_vgg", 0.25, _small_vgg_params(16)),
    ],
)
def test_parameter_counts(name, multiplier, expected):
    model = backbones.resnet(name, width_multiplier=multiplier)
    assert model.count_params() == expected


def test_known_parameter_count():
    # small_resnet at width 16: stem 432+64, block1 2x(2304+64), block2 4608+128+9216+128+512+128,
    # block3 18432+256+36864+256+2048+256.
    assert _small_resnet_params(16) == 496 + 4736 + 14720 + 58112
    assert backbones.resnet("small_resnet", width_multiplier=0.25).count_params() == 78064


@pytest.mark.parametrize("name", ["small_resnet", "small_vgg"])
@pytest.mark.parametrize("size, grid", [(28, 7), (32, 8), (64, 16)])
def test_shapes(name, size, grid):
    model = backbones.resnet(name, width_multiplier=0.25)
    x = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    assert model(x).shape == (2, 64)
    assert backbones.feature_dim(model) == 64
    # Two downsamplings: the last stage's map is a quarter of the input's side.
    last = model.get_layer("layer3_0_out" if name == "small_resnet" else "layer3_1_relu")
    assert last.output.shape[1:] == (None, None, 64)
    import keras

    probe = keras.Model(model.input, last.output)
    assert probe(x).shape == (2, grid, grid, 64)


def test_names_are_backbone_choices():
    for name in ("small_resnet", "small_vgg"):
        assert name in backbones.BACKBONE_NAMES
        assert backbones.parse_backbone_name(name) == (name, False)
        config_lib.ModelConfig(backbone=name).validate()
    with pytest.raises(ValueError, match="small_vgg"):
        config_lib.ModelConfig(backbone="tiny_vgg").validate()


def test_builder_builds_it_with_the_seed():
    import tensorflow as tf

    m = config_lib.ModelConfig(backbone="small_vgg", width_multiplier=0.125)
    a = builders.build_encoder(m, tf.distribute.get_strategy(), seed=3)
    b = builders.build_encoder(m, tf.distribute.get_strategy(), seed=3)
    assert a.name == "small_vgg" and a.count_params() == _small_vgg_params(8)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_export_and_rebuild_round_trip(tmp_path):
    """A tiny simsiam-pretrain run exports its trained encoder; simsiam-export rebuilds it from flags.cfg."""
    run = str(tmp_path / "run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    args = [
        "--backbone=small_resnet",
        "--width_multiplier=0.125",
        "--dim=16",
        "--pred_dim=8",
        "--image_size=16",
        "--num_train_examples=32",
        "--batch_size=8",
        "--train_steps=3",
        "--noevaluate",
        "--verbose=0",
        "--affine_translate=0.1",
        "--affine_rotate_deg=10",
        "--input_colour=luma",
        f"--model_dir={run}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "simsiam_tf.cli.pretrain", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    flags_text = open(os.path.join(run, "flags.cfg")).read()
    assert "--backbone=small_resnet" in flags_text and "--affine_rotate_deg=10.0" in flags_text
    assert "--input_colour=luma" in flags_text
    after_run = serving.load_keras_model(os.path.join(run, "export", serving.KERAS_NAME))
    rebuilt_dir = export_job.export_run(run, output_dir=str(tmp_path / "rebuilt"))
    rebuilt = serving.load_keras_model(os.path.join(rebuilt_dir, serving.KERAS_NAME))
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    a, b = after_run.embed(images)["embedding"].numpy(), rebuilt.embed(images)["embedding"].numpy()
    assert a.shape == (4, 32)
    np.testing.assert_allclose(a, b, atol=1e-6)
    # --input_colour=luma travels with the run: the export sees an image and its grayscale alike.
    gray = np.repeat(np.round(images @ np.array([0.299, 0.587, 0.114]))[..., None], 3, axis=-1).astype(np.uint8)
    np.testing.assert_allclose(rebuilt.embed(gray)["embedding"].numpy(), b, atol=2e-2)
    assert not np.allclose(rebuilt.embed(255 - images)["embedding"].numpy(), b, atol=2e-2)
    # The trained encoder, not a fresh one: three steps moved its weights away from the seed's.
    import tensorflow as tf

    fresh = builders.build_encoder(
        config_lib.ModelConfig(backbone="small_resnet", width_multiplier=0.125, input_colour="luma"),
        tf.distribute.get_strategy(),
        0,
    )
    assert not np.allclose(fresh(images.astype(np.float32) / 255.0).numpy(), a, atol=1e-4)
