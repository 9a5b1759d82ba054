"""Keras Applications and registered backbones: names, input ranges, BatchNorm, weights files, ImageNet without network."""

import importlib
import urllib.error

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import simsiam_tf as st
from simsiam_tf import builders
from simsiam_tf import config as config_lib
from simsiam_tf.config import backbone_names, choices
from simsiam_tf.errors import RunError
from simsiam_tf.models import backbones, keras_backbones

SHAPE = (32, 32, 3)


def test_every_listed_application_is_in_the_installed_keras_with_a_known_input_range():
    for name in choices.KERAS_APPLICATIONS:
        constructor = getattr(keras.applications, name)
        assert constructor.__module__.rsplit(".", 1)[-1] in keras_backbones.FAMILY_INPUT, name


@pytest.mark.parametrize("family", sorted(keras_backbones.FAMILY_INPUT))
def test_the_input_layer_gives_each_family_what_its_preprocess_input_gives_on_0_255(family):
    x = np.random.default_rng(0).uniform(0, 1, (2, 5, 5, 3)).astype("float32")
    expected = importlib.import_module(f"keras.applications.{family}").preprocess_input(x * 255.0)
    layer = keras_backbones.ApplicationInput(keras_backbones.FAMILY_INPUT[family])
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-4)


def test_families_that_preprocess_inside_the_model_get_pixel_values():
    # MobileNetV3 and EfficientNetV2 rescale 0-255 inside (include_preprocessing): a [0, 1] image
    # goes in as 0-255, so the encoder equals the bare application on 255 * x.
    x = np.random.default_rng(1).uniform(0, 1, (2, *SHAPE)).astype("float32")
    keras.utils.set_random_seed(0)
    encoder = st.build_backbone("keras:MobileNetV3Small", input_shape=SHAPE)
    bare = encoder.get_layer("MobileNetV3Small")
    np.testing.assert_allclose(encoder(x).numpy(), bare(x * 255.0).numpy(), rtol=1e-5, atol=1e-6)
    assert encoder.output_shape == (None, 576)


def test_batchnorm_follows_sync_bn_and_the_reference_convention():
    own = st.build_backbone("keras:MobileNetV3Small", input_shape=SHAPE)
    bns = keras_backbones.batchnorm_layers(own)
    assert bns and {(b.momentum, b.epsilon, b.synchronized) for b in bns} == {(0.999, 1e-3, False)}
    ref = st.build_backbone("keras:MobileNetV3Small", input_shape=SHAPE, sync_bn=True, bn_convention="reference")
    assert {(b.momentum, b.epsilon, b.synchronized) for b in keras_backbones.batchnorm_layers(ref)} == {
        (0.9, 1e-5, True)
    }
    # The configs record it, so the model's .keras file rebuilds the same layers.
    clone = keras.Model.from_config(ref.get_config())
    assert {(b.momentum, b.epsilon, b.synchronized) for b in keras_backbones.batchnorm_layers(clone)} == {
        (0.9, 1e-5, True)
    }


def test_a_weights_file_round_trip_gives_the_same_features(tmp_path):
    x = np.random.default_rng(2).uniform(0, 1, (3, *SHAPE)).astype("float32")
    keras.utils.set_random_seed(1)
    a = st.build_backbone("keras:MobileNetV3Small", input_shape=SHAPE)
    a.compile(optimizer="sgd", loss="mse")
    a.fit(x, np.ones((3, 576), "float32"), epochs=1, verbose=0)  # moves weights and BatchNorm statistics
    path = str(tmp_path / "encoder.weights.h5")
    a.save_weights(path)
    keras.utils.set_random_seed(2)
    b = st.build_backbone("keras:MobileNetV3Small", input_shape=SHAPE, weights=path)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb), err_msg=wa.path)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_a_weights_file_of_another_backbone_is_refused_naming_the_shapes(tmp_path):
    path = str(tmp_path / "vgg.weights.h5")
    backbones.build_backbone("small_vgg", width_multiplier=0.25).save_weights(path)
    target = backbones.build_backbone("small_vgg", width_multiplier=0.125)
    before = [np.array(w) for w in target.weights]
    with pytest.raises(RunError) as err:
        keras_backbones.load_backbone_weights(target, path)
    message = str(err.value)
    # small_vgg x0.25: 16/32/64 channels; x0.125: 8/16/32. The stem conv's kernel differs.
    assert "(3, 3, 3, 16)" in message and "(3, 3, 3, 8)" in message and path in message
    for w, value in zip(target.weights, before):
        np.testing.assert_array_equal(np.asarray(w), value)


def test_imagenet_without_network_names_the_file_keras_looked_for(tmp_path, monkeypatch):
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    (tmp_path / "keras_home").mkdir()
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    attempts = []

    def no_network(url, target, *args):
        attempts.append(target)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    with pytest.raises(RunError) as err:
        st.build_backbone("keras:MobileNetV3Small", input_shape=SHAPE, weights="imagenet")
    assert len(attempts) == 1
    assert attempts[0].startswith(str(tmp_path / "keras_home" / "models"))
    message = str(err.value)
    assert attempts[0] in message and "keras:MobileNetV3Small" in message
    assert "download that file and copy it to" in message and "--backbone_weights=none" in message


def test_imagenet_weights_are_copied_from_the_cached_file_for_a_new_run(tmp_path, monkeypatch):
    # Keras' cache holds the weights file: the encoder built by the run takes them, with no download.
    from keras.src.backend import config as keras_config
    from keras.src.legacy.saving import legacy_h5_format
    from keras.src.utils import file_utils

    (tmp_path / "keras_home").mkdir()
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    written = []

    def fake_download(url, target, *args):  # stands in for the network: a file the test makes
        keras.utils.set_random_seed(7)
        source = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=SHAPE, pooling="avg")
        with h5py.File(target, "w") as f:  # the legacy .h5 layout of Keras' published weights files
            legacy_h5_format.save_weights_to_hdf5_group(f, source)
        written.append(source)

    monkeypatch.setattr(file_utils, "urlretrieve", fake_download)
    monkeypatch.setattr(file_utils, "validate_file", lambda *a, **k: True)
    model_config = config_lib.ModelConfig(backbone="keras:MobileNetV3Small", backbone_weights="imagenet")
    encoder = builders.build_encoder(model_config, tf.distribute.get_strategy(), seed=0, image_size=32)
    assert builders.load_initial_weights(model_config, encoder) == "imagenet"
    inner = encoder.get_layer("MobileNetV3Small")
    for a, b in zip(inner.weights, written[0].weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_names_are_checked_with_the_valid_spellings():
    with pytest.raises(ValueError, match="EfficientNetV2B0"):
        config_lib.ModelConfig(backbone="keras:EfficientNetV9").validate()
    with pytest.raises(ValueError, match="keras:NAME"):
        config_lib.ModelConfig(backbone="mobilenet").validate()
    with pytest.raises(ValueError, match="needs a Keras Applications backbone"):
        config_lib.ModelConfig(backbone="small_vgg", backbone_weights="imagenet").validate()
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        config_lib.ModelConfig(backbone_weights="encoder.h5").validate()
    config_lib.ModelConfig(backbone="keras:ConvNeXtTiny", backbone_weights="imagenet").validate()


def _tiny_cnn(input_shape):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny_cnn")


def test_a_registered_builder_is_a_backbone_for_the_config_and_build_backbone():
    st.register_backbone("tiny_cnn_test", _tiny_cnn)
    try:
        config_lib.ModelConfig(backbone="tiny_cnn_test", bn_convention="reference").validate()
        encoder = st.build_backbone("tiny_cnn_test", input_shape=(16, 16, 3), bn_convention="reference")
        assert encoder.output_shape == (None, 8)
        assert [(b.momentum, b.epsilon) for b in keras_backbones.batchnorm_layers(encoder)] == [(0.9, 1e-5)]
        with pytest.raises(ValueError, match="registered already"):
            st.register_backbone("tiny_cnn_test", lambda input_shape: _tiny_cnn(input_shape))
    finally:
        backbone_names.unregister_backbone("tiny_cnn_test")
    with pytest.raises(ValueError, match="unknown backbone"):
        config_lib.ModelConfig(backbone="tiny_cnn_test").validate()
    with pytest.raises(ValueError, match="package's"):
        st.register_backbone("resnet18", _tiny_cnn)


def test_an_entry_point_makes_a_backbone_without_python(monkeypatch):
    class Entry:
        name = "tiny_cnn_entry"

        def load(self):
            return _tiny_cnn

    monkeypatch.setattr(
        backbone_names.importlib.metadata,
        "entry_points",
        lambda group: [Entry()] if group == backbone_names.ENTRY_POINT_GROUP else [],
    )
    assert backbone_names.backbone_kind("tiny_cnn_entry") == backbone_names.REGISTERED
    assert st.build_backbone("tiny_cnn_entry", input_shape=(16, 16, 3)).output_shape == (None, 8)


def test_a_builder_that_does_not_pool_is_refused():
    st.register_backbone(
        "no_pool_test", lambda input_shape: keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(4, 3)])
    )
    try:
        with pytest.raises(ValueError, match=r"must output \[N, feat_dim\]"):
            st.build_backbone("no_pool_test", input_shape=(16, 16, 3))
    finally:
        backbone_names.unregister_backbone("no_pool_test")
