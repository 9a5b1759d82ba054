import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import losses

DISTANCES = ("l2", "squared_l2", "angular")


# ---------------------------------------------------------------- NumPy references


def np_neg_cos(p, z):
    p = p / np.linalg.norm(p, axis=-1, keepdims=True)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    return -np.mean(np.sum(p * z, axis=-1))


def np_contrastive(y, d, margin):
    return y * d**2 + (1 - y) * np.maximum(margin - d, 0) ** 2


def np_distance(x, kind):
    x = x.astype(np.float64)
    if kind == "angular":
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = np.maximum(1.0 - u @ u.T, 0.0)
    else:
        d = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
        if kind == "l2":
            d = np.sqrt(d)
    np.fill_diagonal(d, 0.0)
    return d


def np_semi_hard(labels, d, margin):
    """FaceNet semi-hard mining as TF-Addons, written pair by pair."""
    total, count = 0.0, 0
    n = len(labels)
    for a in range(n):
        negatives = [k for k in range(n) if labels[k] != labels[a]]
        if not negatives:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [d[a, k] for k in negatives if d[a, k] > d[a, p]]
            d_an = min(farther) if farther else max(d[a, k] for k in negatives)
            total += max(d[a, p] - d_an + margin, 0.0)
            count += 1
    return total / count if count else 0.0


def np_batch_hard(labels, d, margin):
    total, count = 0.0, 0
    n = len(labels)
    for a in range(n):
        positives = [d[a, k] for k in range(n) if k != a and labels[k] == labels[a]]
        negatives = [d[a, k] for k in range(n) if labels[k] != labels[a]]
        if not positives or not negatives:
            continue
        total += max(max(positives) - min(negatives) + margin, 0.0)
        count += 1
    return total / count if count else 0.0


NP_MINING = {"semi_hard": np_semi_hard, "batch_hard": np_batch_hard}


# ---------------------------------------------------------------- SimTriplet


def test_simtriplet_matches_numpy_and_stops_gradient():
    rng = np.random.default_rng(0)
    p1, p2, p3, z1, z2, z3 = (rng.normal(size=(6, 5)).astype(np.float32) for _ in range(6))
    expected = 0.5 * (np_neg_cos(p1, z2) + np_neg_cos(p2, z1) + np_neg_cos(p1, z3) + np_neg_cos(p3, z1))
    zs = [tf.Variable(z) for z in (z1, z2, z3)]
    ps = [tf.Variable(p) for p in (p1, p2, p3)]
    with tf.GradientTape(persistent=True) as tape:
        loss = losses.simtriplet_loss(*ps, *zs)
        loss_no_sg = losses.simtriplet_loss(*ps, *zs, stop_gradient=False)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss_no_sg.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert all(g is None for g in tape.gradient(loss, zs))
    assert all(np.any(g.numpy() != 0) for g in tape.gradient(loss, ps))
    assert all(np.any(g.numpy() != 0) for g in tape.gradient(loss_no_sg, zs))


# ---------------------------------------------------------------- contrastive


@pytest.mark.parametrize("margin", [1.0, 0.7])
def test_contrastive_matches_numpy(margin):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=64)
    d = rng.uniform(0.0, 2.0, size=64).astype(np.float32)
    got = losses.contrastive_loss(y, d, margin=margin).numpy()
    np.testing.assert_allclose(got, np_contrastive(y, d, margin), rtol=1e-6, atol=1e-7)
    # [B] labels with [B, 1] distances stay per pair instead of broadcasting to [B, B].
    got_col = losses.contrastive_loss(y, d[:, None], margin=margin).numpy()
    assert got_col.shape == (64, 1)
    np.testing.assert_allclose(got_col[:, 0], got, rtol=0, atol=0)
    wrapped = losses.ContrastiveLoss(margin=margin)(y, d).numpy()
    np.testing.assert_allclose(wrapped, np.mean(np_contrastive(y, d, margin)), rtol=1e-5)


def test_contrastive_float16_inputs_compute_in_float32():
    d = np.array([0.1, 0.5, 2.0], np.float16)
    got = losses.contrastive_loss(np.array([1, 0, 0]), tf.constant(d))
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), np_contrastive(np.array([1, 0, 0]), d.astype(np.float64), 1.0), rtol=1e-6)


# ---------------------------------------------------------------- distances


@pytest.mark.parametrize("kind", DISTANCES)
def test_pairwise_distance_matches_numpy(kind):
    x = np.random.default_rng(2).normal(size=(10, 7)).astype(np.float32)
    got = losses.pairwise_distance(x, kind).numpy()
    np.testing.assert_allclose(got, np_distance(x, kind), rtol=1e-4, atol=1e-5)
    assert np.all(np.diag(got) == 0)
    assert np.all(got >= 0)


@pytest.mark.parametrize("kind", DISTANCES)
def test_pairwise_distance_gradient_finite_for_coincident_embeddings(kind):
    x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    x[1] = x[0]
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        d = losses.pairwise_distance(x, kind)
        total = tf.reduce_sum(d)
    assert d.numpy()[0, 1] == pytest.approx(0.0, abs=1e-3)
    assert np.all(np.isfinite(tape.gradient(total, x).numpy()))


# ---------------------------------------------------------------- triplet


@pytest.mark.parametrize("mining", ["semi_hard", "batch_hard"])
@pytest.mark.parametrize("kind", DISTANCES)
def test_triplet_matches_numpy_on_random_embeddings(mining, kind):
    rng = np.random.default_rng(4)
    for trial, margin in enumerate([1.0, 0.2, 0.05]):
        # The last trial has singleton classes (anchors with no positive).
        labels = rng.integers(0, 4, size=20) if trial < 2 else np.r_[rng.integers(0, 3, size=14), 5, 6, 7]
        x = rng.normal(size=(len(labels), 6)).astype(np.float32)
        got = losses.triplet_loss(labels, x, margin=margin, mining=mining, distance=kind).numpy()
        # Mining is compared on the same float32 distances, so near-ties choose alike;
        # the distances themselves are checked against NumPy above.
        d = losses.pairwise_distance(x, kind).numpy().astype(np.float64)
        expected = NP_MINING[mining](labels, d, margin)
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
        # End to end against float64 NumPy distances, looser for the float32 rounding.
        expected64 = NP_MINING[mining](labels, np_distance(x, kind), margin)
        assert got == pytest.approx(expected64, rel=1e-3, abs=1e-4)
        assert expected > 0


def test_semi_hard_fallback_and_singletons_known_value():
    # Anchor 0 (x=0): positive at 3, negatives at 1 and 2, none farther -> farthest (2): loss 2.
    # Anchor 1 (x=3): positive at 3, negatives at 2 and 5 -> semi-hard 5: loss 0.
    # Labels 1 and 2 are classes of one: no positive, nothing added.
    labels = np.array([0, 0, 1, 2])
    x = np.array([[0.0], [3.0], [1.0], [-2.0]], np.float32)
    assert losses.triplet_loss(labels, x).numpy() == pytest.approx(1.0)
    assert losses.triplet_loss(labels, x, mining="batch_hard").numpy() == pytest.approx(2.5)
    assert np_semi_hard(labels, np_distance(x, "l2"), 1.0) == pytest.approx(1.0)


def test_semi_hard_requires_strictly_farther_negative():
    # Anchor 0 has a negative at exactly d(a, p) = 2: it is not "farther", so the
    # semi-hard negative is the one at 5 (loss 0), not the tie (loss 1).
    labels = np.array([0, 0, 1, 1])
    x = np.array([[0.0], [2.0], [-2.0], [5.0]], np.float32)
    # Anchor losses: 0, 0, 7 - 4 + 1 = 4 (fallback), 7 - 5 + 1 = 3 (fallback).
    assert losses.triplet_loss(labels, x).numpy() == pytest.approx(7.0 / 4.0)
    assert np_semi_hard(labels, np_distance(x, "l2"), 1.0) == pytest.approx(7.0 / 4.0)


def test_triplet_without_triplets_is_zero_not_nan():
    x = tf.Variable(np.random.default_rng(5).normal(size=(6, 3)).astype(np.float32))
    for mining in losses.MININGS:
        # One class: no negative. All distinct: no positive.
        for labels in (np.zeros(6, np.int64), np.arange(6)):
            with tf.GradientTape() as tape:
                loss = losses.triplet_loss(labels, x, mining=mining)
            assert loss.numpy() == 0.0
            grad = tape.gradient(loss, x)
            assert grad is None or np.all(grad.numpy() == 0)


def test_triplet_gradient_finite_for_coincident_embeddings():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    x[1] = x[0]  # same class at distance 0
    x[3] = x[2]  # different classes at distance 0
    labels = np.array([0, 0, 1, 2, 1, 2, 0, 1])
    x = tf.Variable(x)
    for mining in losses.MININGS:
        for kind in DISTANCES:
            with tf.GradientTape() as tape:
                loss = losses.triplet_loss(labels, x, mining=mining, distance=kind)
            grad = tape.gradient(loss, x).numpy()
            assert np.isfinite(loss.numpy()) and loss.numpy() > 0, (mining, kind)
            assert np.all(np.isfinite(grad)) and np.any(grad != 0), (mining, kind)


def test_triplet_labels_any_shape_and_float():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, size=12)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    flat = losses.triplet_loss(labels, x).numpy()
    assert losses.triplet_loss(labels[:, None], x).numpy() == flat
    assert losses.triplet_loss(labels.astype(np.float32), x).numpy() == flat


# ---------------------------------------------------------------- Keras wrappers


def test_loss_wrappers_config_round_trip_and_values():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 3, size=12)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    for obj in (
        losses.ContrastiveLoss(margin=0.5),
        losses.TripletLoss(margin=0.3, mining="batch_hard", distance="angular"),
        losses.TripletLoss(),
    ):
        config = obj.get_config()
        clone = type(obj).from_config(config)
        assert clone.get_config() == config
        restored = keras.losses.deserialize(keras.losses.serialize(obj))
        assert type(restored) is type(obj) and restored.get_config() == config
        assert keras.saving.get_registered_name(type(obj)) == f"simsiam_tf>{type(obj).__name__}"
    triplet = losses.TripletLoss(margin=0.3, mining="batch_hard", distance="angular")
    expected = losses.triplet_loss(labels, x, 0.3, "batch_hard", "angular").numpy()
    assert triplet(labels, x).numpy() == pytest.approx(expected, rel=1e-6)
    assert triplet.get_config()["margin"] == 0.3


def test_triplet_loss_in_keras_fit_takes_the_gradient_step():
    rng = np.random.default_rng(9)
    labels = np.repeat(np.arange(4), 4)
    x = (rng.normal(size=(16, 3)) + labels[:, None]).astype(np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    lr = 0.05
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=losses.TripletLoss(margin=0.5))
    with tf.GradientTape() as tape:
        before = losses.triplet_loss(labels, model(x), 0.5)
    grads = tape.gradient(before, model.trainable_variables)
    expected = [v.numpy() - lr * g.numpy() for v, g in zip(model.trainable_variables, grads)]
    history = model.fit(x, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert history.history["loss"][0] == pytest.approx(before.numpy(), rel=1e-5)
    for v, e in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)
    assert any(np.any(g.numpy() != 0) for g in grads)


def test_bad_arguments_raise_value_error_naming_valid_values():
    cases = [
        (lambda: losses.TripletLoss(mining="hardest"), "mining"),
        (lambda: losses.TripletLoss(distance="cosine"), "distance"),
        (lambda: losses.TripletLoss(margin=-0.1), "margin"),
        (lambda: losses.ContrastiveLoss(margin=-1.0), "margin"),
        (lambda: losses.triplet_loss([0, 0], np.ones((2, 2)), mining="all"), "mining"),
        (lambda: losses.pairwise_distance(np.ones((2, 2)), distance="L2"), "distance"),
        (lambda: losses.contrastive_loss([1], [0.5], margin="big"), "margin"),
    ]
    valid = {"mining": losses.MININGS, "distance": losses.DISTANCES, "margin": (">= 0",)}
    for make, name in cases:
        with pytest.raises(ValueError, match=name) as info:
            make()
        assert all(v in str(info.value) for v in valid[name]), str(info.value)


# ---------------------------------------------------------------- TF-Addons parity


def _np_masked_maximum(data, mask):
    """tfa.losses.triplet._masked_maximum: the row max under `mask`, the row min when it is empty."""
    axis_minimums = data.min(axis=1, keepdims=True)
    return ((data - axis_minimums) * mask).max(axis=1, keepdims=True) + axis_minimums


def _np_masked_minimum(data, mask):
    axis_maximums = data.max(axis=1, keepdims=True)
    return ((data - axis_maximums) * mask).min(axis=1, keepdims=True) + axis_maximums


def np_tfa_triplet_hard(labels, pdist, margin):
    """tfa.losses.triplet_hard_loss (soft=False), re-derived from its source in NumPy."""
    labels = np.reshape(labels, [-1, 1])
    adjacency = (labels == labels.T).astype(np.float64)
    hard_negatives = _np_masked_minimum(pdist, 1.0 - adjacency)
    mask_positives = adjacency - np.eye(len(labels))
    hard_positives = _np_masked_maximum(pdist, mask_positives)
    return np.mean(np.maximum(hard_positives - hard_negatives + margin, 0.0))


def np_tfa_triplet_semihard(labels, pdist, margin):
    """tfa.losses.triplet_semihard_loss, re-derived from its source in NumPy (tiled masks)."""
    labels = np.reshape(labels, [-1, 1])
    n = len(labels)
    adjacency = labels == labels.T
    adjacency_not = ~adjacency
    pdist_tile = np.tile(pdist, [n, 1])
    mask = np.tile(adjacency_not, [n, 1]) & (pdist_tile > np.reshape(pdist.T, [-1, 1]))
    mask_final = np.reshape(mask.sum(axis=1, keepdims=True) > 0.0, [n, n]).T
    negatives_outside = np.reshape(_np_masked_minimum(pdist_tile, mask.astype(np.float64)), [n, n]).T
    negatives_inside = np.tile(_np_masked_maximum(pdist, adjacency_not.astype(np.float64)), [1, n])
    semi_hard_negatives = np.where(mask_final, negatives_outside, negatives_inside)
    loss_mat = margin + pdist - semi_hard_negatives
    mask_positives = adjacency.astype(np.float64) - np.eye(n)
    num_positives = mask_positives.sum()
    with np.errstate(invalid="ignore"):
        return np.maximum(loss_mat * mask_positives, 0.0).sum() / num_positives


@pytest.mark.parametrize("kind", DISTANCES)
def test_tfa_compat_matches_tf_addons_formulas(kind):
    rng = np.random.default_rng(11)
    cases = [
        rng.integers(0, 4, size=16),  # usually every anchor has a positive
        np.r_[rng.integers(0, 3, size=12), 7, 8, 9],  # anchors without a positive
        np.arange(6),  # no positive pair at all
        np.zeros(5, np.int64),  # no negative at all
    ]
    for labels in cases:
        x = rng.normal(size=(len(labels), 5)).astype(np.float32)
        d = losses.pairwise_distance(x, kind).numpy().astype(np.float64)
        for margin in (1.0, 0.3):
            hard = losses.triplet_loss(labels, x, margin, "batch_hard", kind, tfa_compat=True).numpy()
            assert hard == pytest.approx(np_tfa_triplet_hard(labels, d, margin), rel=1e-5, abs=1e-6)
            semi = losses.triplet_loss(labels, x, margin, "semi_hard", kind, tfa_compat=True).numpy()
            expected = np_tfa_triplet_semihard(labels, d, margin)
            if np.isnan(expected):
                assert np.isnan(semi)
            else:
                assert semi == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_tfa_compat_differs_only_for_anchors_without_positive_or_negative():
    # Anchor 2 (x=1) has no positive: TF-Addons' hard loss adds max(0 - 1 + 1, 0) = 0 for it
    # but still counts it, anchor 3 (x=-2): max(0 - 2 + 1, 0) = 0; both count in the mean.
    labels = np.array([0, 0, 1, 2])
    x = np.array([[0.0], [3.0], [1.0], [-2.0]], np.float32)
    ours = losses.triplet_loss(labels, x, mining="batch_hard").numpy()
    tfa = losses.triplet_loss(labels, x, mining="batch_hard", tfa_compat=True).numpy()
    assert ours == pytest.approx(2.5)  # (3 - 1 + 1 + 3 - 2 + 1) / 2
    assert tfa == pytest.approx(5.0 / 4.0)
    labels = np.array([0, 0, 1, 1, 2, 2, 3])  # only anchor 6 lacks a positive
    x = np.random.default_rng(12).normal(size=(7, 3)).astype(np.float32) * 0.1
    ours = losses.triplet_loss(labels, x, margin=1.0, mining="batch_hard").numpy()
    tfa = losses.triplet_loss(labels, x, margin=1.0, mining="batch_hard", tfa_compat=True).numpy()
    d = losses.pairwise_distance(x).numpy()
    lonely = max(1.0 - d[6, :6].min(), 0.0)
    assert tfa == pytest.approx((6 * ours + lonely) / 7, rel=1e-5)
    full = np.array([0, 0, 1, 1, 2, 2])  # every anchor has both: identical
    for mining in losses.MININGS:
        a = losses.triplet_loss(full, x[:6], mining=mining).numpy()
        assert losses.triplet_loss(full, x[:6], mining=mining, tfa_compat=True).numpy() == pytest.approx(a)
    wrapper = losses.TripletLoss(mining="batch_hard", tfa_compat=True)
    assert losses.TripletLoss.from_config(wrapper.get_config()).tfa_compat is True
    assert wrapper(labels, x).numpy() == pytest.approx(tfa, rel=1e-6)
