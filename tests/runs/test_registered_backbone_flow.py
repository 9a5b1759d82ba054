"""A user's own keras.Model, registered as a backbone, through pretraining, the linear probe, verification and export."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_pretrain_run

import simsiam_tf as st
from simsiam_tf import config
from simsiam_tf.config import backbone_names
from simsiam_tf.runs import export as export_job
from simsiam_tf.runs import linear, verify

NAME = "tiny_cnn_flow"
SIZE = 16


def tiny_cnn(input_shape):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    st.register_backbone(NAME, tiny_cnn)
    try:
        yield tiny_pretrain_run(
            tmp_path_factory,
            run={"model.backbone": NAME, "model.bn_convention": "reference", "batch_size": 8, "train_steps": 4},
            write_flags=True,
            image_size=SIZE,
            num_train_examples=32,
            num_eval_examples=32,
        )
    finally:
        backbone_names.unregister_backbone(NAME)


@pytest.fixture
def registered():
    st.register_backbone(NAME, tiny_cnn)
    yield
    backbone_names.unregister_backbone(NAME)


def _data(model_dir):
    return {
        "runtime.model_dir": str(model_dir),
        "runtime.verbose": 0,
        "model.backbone": NAME,
        "data.image_size": SIZE,
        "data.num_train_examples": 32,
        "data.num_eval_examples": 32,
    }


def test_the_probe_and_the_verifier_rebuild_the_registered_backbone(run_dir, registered, tmp_path):
    probe_config = config.replace(
        config.LinearConfig(init_from=run_dir),
        **_data(tmp_path / "linear"),
        epochs=1,
        batch_size=8,
        augment=False,
        compare_baselines=False,
    )
    metrics = linear.run(probe_config)
    assert metrics["sanity_check"] == "passed"
    verify_config = config.replace(
        config.VerifyConfig(init_from=run_dir),
        **{**_data(tmp_path / "verify"), "data.num_train_examples": 100, "data.num_eval_examples": 100},
        embedding_dim=8,
        hidden_dim=16,
        batch_size=4,
        epochs=1,
        steps_per_epoch=1,
        num_val_pairs=20,
        num_eval_pairs=20,
        num_trials=5,
    )
    verify.run(verify_config)
    with open(os.path.join(tmp_path / "verify", "metrics.json")) as f:
        assert np.isfinite(json.load(f)["roc_auc"])


def test_the_export_serves_the_registered_backbone(run_dir, registered, tmp_path):
    export_dir = export_job.export_run(run_dir, str(tmp_path / "export"))
    images = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    served = tf.saved_model.load(os.path.join(export_dir, "saved_model")).signatures["embed"](
        images=tf.constant(images)
    )["embedding"]
    _, parts = export_job.rebuild(export_job.inspect_run(run_dir))
    own = parts["encoder"](images.astype(np.float32) / 255.0, training=False)
    assert parts["encoder"].output_shape == (None, 8)
    np.testing.assert_allclose(served.numpy(), own.numpy(), rtol=1e-5, atol=1e-6)


def test_without_the_registration_the_run_names_what_is_missing(run_dir):
    with pytest.raises(ValueError, match=f"unknown backbone '{NAME}'.*register_backbone"):
        export_job.rebuild(export_job.inspect_run(run_dir))
