"""PairVerifier: the heads train, score in the right direction, keep their threshold."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import data, losses
from simsiam_tf.data import pairs
from simsiam_tf.evaluation import pair_metrics
from simsiam_tf.models import verifier
from simsiam_tf.models.verifier import PairVerifier

SIZE = 16
HEADS = ("contrastive", "triplet", "classifier", "cosine")
COLOURS = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.2, 0.9], [0.9, 0.9, 0.2]], np.float32)


def _backbone(name="tiny"):
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, strides=2, name=f"{name}_conv"),
            keras.layers.BatchNormalization(name=f"{name}_bn"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name=name,
    )


def _model(head, **kwargs):
    keras.utils.set_random_seed(0)
    kwargs.setdefault("embedding_dim", 8)
    kwargs.setdefault("hidden_dim", 16)
    return PairVerifier(_backbone(), head=head, **kwargs)


def _images(labels, rng):
    """Images whose class is their colour, with pixel noise."""
    x = COLOURS[np.asarray(labels)][:, None, None, :] + 0.1 * rng.standard_normal((len(labels), SIZE, SIZE, 3))
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _pair_batches(rng, num_batches, batch=16):
    out = []
    for _ in range(num_batches):
        a = rng.integers(0, 4, batch)
        b = np.where(np.arange(batch) < batch // 2, a, (a + rng.integers(1, 4, batch)) % 4)
        out.append(((_images(a, rng), _images(b, rng)), (a == b).astype(np.int64)))
    return out


def _triplet_batches(rng, num_batches, batch=8):
    out = []
    for _ in range(num_batches):
        a = rng.integers(0, 4, batch)
        n = (a + rng.integers(1, 4, batch)) % 4
        out.append(((_images(a, rng), _images(a, rng), _images(n, rng)), (a, n)))
    return out


def _dataset(batches):
    """The batches as a dataset of known length: one element per batch."""
    stacked = tf.nest.map_structure(lambda *xs: np.stack(xs), *batches)
    return tf.data.Dataset.from_tensor_slices(stacked)


def _batches(head, rng, n):
    return _triplet_batches(rng, n) if head == "triplet" else _pair_batches(rng, n)


@pytest.mark.parametrize("head", HEADS)
def test_head_trains_and_learns_the_score_direction(head):
    rng = np.random.default_rng(0)
    model = _model(head)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = [v.numpy().copy() for v in model.trainable_variables]
    history = model.fit(_dataset(_batches(head, rng, 30)), epochs=1, verbose=0).history
    assert set(history) == {"loss", "score_gap"}
    assert np.isfinite(history["loss"][0])
    assert not any(np.array_equal(v.numpy(), b) for v, b in zip(model.trainable_variables, before))

    # On new pairs of the same easy task, same-class pairs score higher than different ones.
    (x1, x2), y = _pair_batches(np.random.default_rng(1), 1, batch=64)[0]
    scores = model.score(x1, x2).numpy()
    assert scores.shape == (64,) and np.all(np.isfinite(scores))
    assert pair_metrics.roc_auc(y, scores) > 0.8
    if head == "classifier":
        assert np.all((scores > 0) & (scores < 1))


@pytest.fixture(scope="module")
def synthetic_pool():
    source = data.load_source("synthetic", split="train", image_size=SIZE, num_examples=100)
    return pairs.make_pools(source, None, seed=0).train


@pytest.mark.parametrize("head", HEADS)
def test_head_trains_on_the_synthetic_pairs(head, synthetic_pool):
    model = _model(head)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    make = pairs.make_class_triplet_dataset if head == "triplet" else pairs.make_pair_dataset
    history = model.fit(make(synthetic_pool, 4, SIZE, seed=0), steps_per_epoch=2, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["score_gap"][0])
    assert int(model.optimizer.iterations.numpy()) == 2


@pytest.mark.parametrize("head", ["contrastive", "triplet"])
def test_distance_heads_score_minus_the_distance(head):
    model = _model(head, distance="l2" if head == "contrastive" else "squared_l2")
    (x1, x2), _ = _pair_batches(np.random.default_rng(2), 1, batch=8)[0]
    e1, e2 = model.embed(x1).numpy(), model.embed(x2).numpy()
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1.0, rtol=1e-5)
    distance = np.sum((e1 - e2) ** 2, axis=1)
    if head == "contrastive":
        distance = np.sqrt(distance)
    np.testing.assert_allclose(model.score(x1, x2).numpy(), -distance, atol=1e-5)
    # An image compared with itself has distance 0: the highest score there is.
    self_scores = model.score(x1, x1).numpy()
    np.testing.assert_allclose(self_scores, 0.0, atol=1e-5)
    assert np.all(self_scores >= model.score(x1, x2).numpy())


def test_cosine_head_compares_the_encoder_features():
    model = _model("cosine", embedding_dim=99, freeze_encoder=True)
    assert model.embedding_head is None and model.embedding_dim == 8  # the backbone's width, not embedding_dim
    assert model.trainable_variables == []
    (x1, x2), _ = _pair_batches(np.random.default_rng(3), 1, batch=8)[0]
    f1, f2 = model.backbone(x1, training=False).numpy(), model.backbone(x2, training=False).numpy()
    cos = np.sum(f1 * f2, axis=1) / (np.linalg.norm(f1, axis=1) * np.linalg.norm(f2, axis=1))
    # minus the distance of unit vectors: -sqrt(2 - 2 cos), which orders pairs as the cosine does
    np.testing.assert_allclose(model.score(x1, x2).numpy(), -np.sqrt(np.maximum(2 - 2 * cos, 0) + 1e-12), atol=1e-5)
    clone = PairVerifier.from_config(model.get_config())
    assert clone.head == "cosine" and clone.embedding_head is None and clone.embedding_dim == 8


def test_classifier_score_is_the_same_probability():
    model = _model("classifier", embedding_dim=4, hidden_dim=8)
    # Hand-set MLP: logit = 1 - 10 * sum |e1 - e2|, from the |e1 - e2| half of the input.
    fc1, logit = model.classifier.layers
    w1 = np.zeros((8, 8), np.float32)
    w1[:4, :4] = np.eye(4)
    fc1.set_weights([w1, np.zeros(8, np.float32)])
    w2 = np.zeros((8, 1), np.float32)
    w2[:4] = -10.0
    logit.set_weights([w2, np.ones(1, np.float32)])
    (x1, x2), _ = _pair_batches(np.random.default_rng(3), 1, batch=8)[0]
    e1, e2 = model.embed(x1).numpy(), model.embed(x2).numpy()
    expected = 1.0 / (1.0 + np.exp(-(1.0 - 10.0 * np.abs(e1 - e2).sum(axis=1))))
    np.testing.assert_allclose(model.score(x1, x2).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(model.score(x1, x1).numpy(), 1.0 / (1.0 + np.exp(-1.0)), rtol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_step_loss_is_the_head_loss(head):
    model = _model(head, mining="batch_hard", margin=0.5)
    model.compile(optimizer="adam")
    batch = _batches(head, np.random.default_rng(4), 1)[0]
    logs = model.test_step(batch)
    inputs, targets = batch
    e = model.embed(np.concatenate(inputs), training=False)
    n = len(inputs[0])
    if head == "triplet":
        labels = np.r_[targets[0], targets[0], targets[1]]
        expected = losses.triplet_loss(labels, e, margin=0.5, mining="batch_hard")
    elif head in ("contrastive", "cosine"):
        d = np.linalg.norm(e[:n] - e[n:], axis=1)
        expected = np.mean(losses.contrastive_loss(targets, d, margin=0.5))
    else:
        p = model.score_embeddings(e[:n], e[n:]).numpy()
        expected = -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    np.testing.assert_allclose(float(logs["loss"]), float(expected), rtol=1e-4)


def test_threshold_is_stored_and_used(tmp_path):
    model = _model("contrastive")
    (x1, x2), _ = _pair_batches(np.random.default_rng(5), 1, batch=16)[0]
    scores = model.score(x1, x2).numpy()
    threshold = float(np.median(scores))
    model.set_threshold(threshold)
    decided = model.verify(x1, x2).numpy()
    np.testing.assert_array_equal(decided, scores >= threshold)
    assert decided.any() and not decided.all()
    assert any(w is model.threshold for w in model.non_trainable_weights)
    assert all(w is not model.threshold for w in model.trainable_weights)

    # Saved with the weights: .keras files and checkpoints bring it back.
    path = str(tmp_path / "verifier.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, PairVerifier) and loaded.head == "contrastive"
    assert float(loaded.threshold.numpy()) == pytest.approx(threshold)
    np.testing.assert_allclose(loaded.score(x1, x2).numpy(), scores, atol=1e-6)
    np.testing.assert_array_equal(loaded.verify(x1, x2).numpy(), decided)
    prefix = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    fresh = _model("contrastive")
    assert float(fresh.threshold.numpy()) == 0.0
    tf.train.Checkpoint(model=fresh).read(prefix).assert_existing_objects_matched()
    assert float(fresh.threshold.numpy()) == pytest.approx(threshold)


def test_config_round_trip():
    model = _model("triplet", mining="batch_hard", distance="angular", margin=0.3, freeze_encoder=True, threshold=-0.5)
    clone = PairVerifier.from_config(model.get_config())
    for name in ("head", "mining", "distance", "margin", "freeze_encoder", "embedding_dim", "normalize_embeddings"):
        assert getattr(clone, name) == getattr(model, name)
    assert float(clone.threshold.numpy()) == -0.5
    assert not clone.backbone.trainable


def test_frozen_encoder_stays_as_it_is():
    model = _model("contrastive", freeze_encoder=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    encoder_before = [w.numpy().copy() for w in model.backbone.weights]
    head_before = [w.numpy().copy() for w in model.embedding_head.trainable_weights]
    assert not {id(v) for v in model.backbone.weights} & {id(v) for v in model.trainable_variables}
    model.fit(_dataset(_pair_batches(np.random.default_rng(6), 3)), epochs=1, verbose=0)
    for w, b in zip(model.backbone.weights, encoder_before):  # BatchNorm statistics included
        np.testing.assert_array_equal(w.numpy(), b)
    assert not any(np.array_equal(w.numpy(), b) for w, b in zip(model.embedding_head.trainable_weights, head_before))


def test_call_scores_pairs_and_embeds_images():
    model = _model("classifier")
    (x1, x2), _ = _pair_batches(np.random.default_rng(7), 1, batch=4)[0]
    np.testing.assert_allclose(model((x1, x2)).numpy(), model.score(x1, x2).numpy(), atol=1e-6)
    assert model(x1).shape == (4, 8)


def test_bad_arguments_and_batches_are_explained():
    with pytest.raises(ValueError, match="distance='angular' applies to the triplet head"):
        _model("contrastive", distance="angular")
    with pytest.raises(ValueError, match="head must be one of"):
        _model("siamese")
    model = _model("triplet")
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"triplet head trains on batches \(\(anchor, positive, negative\)"):
        model.test_step(_pair_batches(np.random.default_rng(8), 1)[0])


def test_pair_distance_matches_numpy():
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(verifier.pair_distance(a, b, "l2"), np.linalg.norm(a - b, axis=1), rtol=1e-5)
    np.testing.assert_allclose(verifier.pair_distance(a, b, "squared_l2"), np.sum((a - b) ** 2, 1), rtol=1e-5)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(verifier.pair_distance(a, b, "angular"), 1 - cos, rtol=1e-5, atol=1e-6)
