"""Every model of the package through the one shared harness (tests/models/harness.py)."""

import keras
import numpy as np
import pytest
from harness import check_model_contract

from simsiam_tf.models import FineTunedClassifier, LinearProbe, SimSiam
from simsiam_tf.models.simtriplet import SimTriplet
from simsiam_tf.models.verifier import PairVerifier

SIZE = 16


def _backbone():
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, strides=2, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="backbone",
    )


def _images(n, seed):
    return np.random.default_rng(seed).uniform(0, 1, (n, SIZE, SIZE, 3)).astype("float32")


def _case(name):
    keras.utils.set_random_seed(0)
    x = _images(4, 0)
    if name == "SimSiam":
        model = SimSiam(
            _backbone(), dim=16, pred_dim=4, projector_layers=2, projector_hidden_dim=12, stop_gradient=False
        )
        return model, x, (_images(4, 1), _images(4, 2))
    if name == "SimTriplet":
        return (
            SimTriplet(_backbone(), dim=16, pred_dim=4, projector_layers=2),
            x,
            tuple(_images(4, s) for s in (1, 2, 3)),
        )
    if name.startswith("PairVerifier"):
        head = name.split(":")[1]
        model = PairVerifier(_backbone(), head=head, embedding_dim=8, hidden_dim=16, freeze_encoder=head == "cosine")
        if head == "triplet":
            batch = (tuple(_images(4, s) for s in (1, 2, 3)), (np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0])))
        else:
            batch = ((_images(4, 1), _images(4, 2)), np.array([1.0, 0.0, 1.0, 0.0], "float32"))
        return model, x, (None if head == "cosine" else batch)
    if name == "LinearProbe":
        return LinearProbe(_backbone(), num_classes=3), x, None
    if name == "FineTunedClassifier":
        return FineTunedClassifier(_backbone(), num_classes=3), x, None
    raise AssertionError(name)


MODELS = [
    "SimSiam",
    "SimTriplet",
    "PairVerifier:contrastive",
    "PairVerifier:triplet",
    "PairVerifier:classifier",
    "PairVerifier:cosine",
    "LinearProbe",
    "FineTunedClassifier",
]


@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_calls_saves_and_reloads(name, tmp_path):
    model, inputs, batch = _case(name)
    if batch is None and name in ("LinearProbe", "FineTunedClassifier"):
        model.compile(
            optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        model.fit(_images(6, 5), np.array([0, 1, 2, 0, 1, 2]), batch_size=3, epochs=1, verbose=0)
    loaded = check_model_contract(model, inputs, tmp_path, train_batch=batch)
    if name == "SimSiam":
        assert (loaded.dim, loaded.pred_dim, loaded.projector_hidden_dim) == (16, 4, 12)
        assert loaded.stop_gradient is False and loaded.use_predictor is True
        x1, x2 = _images(4, 1), _images(4, 2)
        for a, b in zip(loaded.forward_views(x1, x2), model.forward_views(x1, x2)):
            np.testing.assert_allclose(a, b, atol=1e-6)
    if name == "SimTriplet":
        batch = tuple(_images(4, s) for s in (1, 2, 3))
        for a, b in zip(loaded.forward_triplet(*batch), model.forward_triplet(*batch)):
            np.testing.assert_allclose(a, b, atol=1e-6)
    if name.startswith("PairVerifier"):
        x1, x2 = _images(4, 1), _images(4, 2)
        np.testing.assert_allclose(loaded.score(x1, x2), model.score(x1, x2), atol=1e-6)
        assert float(loaded.threshold.numpy()) == float(model.threshold.numpy())


def test_the_harness_catches_a_model_that_forgets_a_constructor_argument(tmp_path):
    @keras.saving.register_keras_serializable(package="simsiam_tf_test")
    class Forgetful(keras.Model):
        def __init__(self, units=3, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.dense = keras.layers.Dense(units)

        def call(self, x, training=False):
            return self.dense(keras.ops.reshape(x, (keras.ops.shape(x)[0], -1)))

    model = Forgetful(units=5)
    with pytest.raises(AssertionError):
        check_model_contract(model, _images(2, 0), tmp_path)
