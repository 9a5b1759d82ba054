import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf import models
from simsiam_tf.models import backbones

SIZE = 16
METRICS = {"loss", "z_std", "center_norm", "residual_norm"}


def _resnet():
    return backbones.build_backbone("resnet18", cifar_stem=True, width_multiplier=0.125)


def _small_backbone(name="small", kernel_regularizer=None):
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, strides=2, kernel_regularizer=kernel_regularizer, name=f"{name}_conv"),
            keras.layers.BatchNormalization(name=f"{name}_bn"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name=name,
    )


def _views(n, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n, SIZE, SIZE, 3), dtype=np.float32),
        rng.random((n, SIZE, SIZE, 3), dtype=np.float32),
    )


def _values(variables):
    return [v.numpy().copy() for v in variables]


def test_fit_moves_every_trainable_variable():
    model = models.SimSiam(_resnet(), dim=32, pred_dim=8)
    x1, x2 = _views(16)
    groups = [model.backbone, model.projector, model.predictor]
    assert len(model.trainable_variables) == sum(len(g.trainable_variables) for g in groups)
    before = _values(model.trainable_variables)

    # Eager keeps this test fast on a CPU; the compiled paths are tested on a small backbone below.
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), run_eagerly=True)
    dataset = tf.data.Dataset.from_tensor_slices((x1, x2)).batch(8)
    history = model.fit(dataset, epochs=1, shuffle=False, verbose=0).history

    # Two steps: the convs feeding a zero-init gamma get their first gradient on step 2.
    assert int(model.optimizer.iterations.numpy()) == 2
    frozen = [v.path for v, b in zip(model.trainable_variables, before) if np.array_equal(v.numpy(), b)]
    assert not frozen
    assert set(history) == METRICS
    loss = history["loss"][0]
    assert np.isfinite(loss) and -1.0 <= loss <= 1.0
    # Freshly initialised outputs are spread out, not collapsed.
    assert history["z_std"][0] > 0.5


def test_views_use_their_own_batch_statistics():
    model = models.SimSiam(_resnet(), dim=32, pred_dim=8)
    x1, x2 = _views(4)
    p1, _, z1, z2 = model.forward_views(x1, x2 + 1.0, training=True)
    # With shared BN statistics over the concatenated views, z1 would depend on x2.
    np.testing.assert_allclose(z1, model.encode(x1, training=True), atol=1e-5)
    np.testing.assert_allclose(z2, model.encode(x2 + 1.0, training=True), atol=1e-5)
    np.testing.assert_allclose(p1, model.predictor(z1, training=True), atol=1e-5)
    assert z1.shape == p1.shape == (4, 32)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_blocks_the_target_branch(stop_gradient):
    model = models.SimSiam(_small_backbone(), dim=16, pred_dim=4, stop_gradient=stop_gradient)
    x1, x2 = _views(4)
    rng = np.random.default_rng(1)
    # Predictions are constants, so every gradient into the encoder comes through the targets.
    p1 = tf.constant(rng.normal(size=(4, 16)), tf.float32)
    p2 = tf.constant(rng.normal(size=(4, 16)), tf.float32)
    encoder_vars = model.backbone.trainable_variables + model.projector.trainable_variables
    with tf.GradientTape() as tape:
        _, _, z1, z2 = model.forward_views(x1, x2, training=True)
        loss = model.loss_from_outputs(p1, p2, z1, z2)
    grads = tape.gradient(loss, encoder_vars)
    # None: not connected to the loss at all, i.e. exactly zero.
    largest = max(0.0 if g is None else float(tf.reduce_max(tf.abs(g))) for g in grads)
    if stop_gradient:
        assert largest == 0.0
    else:
        assert largest > 0.0

    # The prediction branch trains the whole encoder either way.
    with tf.GradientTape() as tape:
        loss = model.loss_from_outputs(*model.forward_views(x1, x2, training=True))
    grads = tape.gradient(loss, model.projector.trainable_variables)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0.0 for g in grads)


def test_without_predictor_p_is_z():
    model = models.SimSiam(_small_backbone(), dim=16, use_predictor=False)
    assert model.predictor is None
    assert not any("predictor" in v.path for v in model.variables)
    assert len(model.trainable_variables) == len(model.backbone.trainable_variables) + len(
        model.projector.trainable_variables
    )
    x1, x2 = _views(4)
    p1, p2, z1, z2 = model.forward_views(x1, x2, training=True)
    assert p1 is z1 and p2 is z2
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = model.train_step((x1, x2))
    assert np.isfinite(float(logs["loss"]))


def test_collapse_indicators():
    # A backbone that maps every image to the same vector: z collapses to one point.
    constant = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8, kernel_initializer="zeros", bias_initializer="ones"),
        ]
    )
    collapsed = models.SimSiam(constant, dim=16, pred_dim=4)
    collapsed.compile(optimizer=keras.optimizers.SGD(0.0))
    x1, x2 = _views(8)
    logs = collapsed.test_step((x1, x2))
    assert float(logs["z_std"]) < 1e-3
    assert float(logs["center_norm"]) == pytest.approx(1.0, abs=1e-3)
    assert float(logs["residual_norm"]) < 1e-3

    healthy = models.SimSiam(_small_backbone(), dim=16, pred_dim=4)
    healthy.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = healthy.train_step((x1, x2))
    assert float(logs["z_std"]) > 0.5
    assert float(logs["center_norm"]) < 0.5
    assert float(logs["residual_norm"]) > 0.8


def test_test_step_changes_nothing_and_accepts_labelled_batches():
    model = models.SimSiam(_small_backbone(), dim=16, pred_dim=4)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x1, x2 = _views(4)
    before = _values(model.variables)
    logs = model.test_step(((x1, x2), np.zeros(4)))
    assert set(logs) == METRICS
    assert all(np.array_equal(v.numpy(), b) for v, b in zip(model.variables, before))
    model.train_step(((x1, x2), np.zeros(4)))
    assert int(model.optimizer.iterations.numpy()) == 1
    with pytest.raises(ValueError, match="two views"):
        model.train_step((x1, x2, x1))


def test_regularization_losses_join_the_gradient():
    x1, x2 = _views(4)
    keras.utils.set_random_seed(0)
    weights = models.SimSiam(_small_backbone(), dim=16, pred_dim=4).get_weights()

    def conv_step(regularizer):
        model = models.SimSiam(_small_backbone(kernel_regularizer=regularizer), dim=16, pred_dim=4)
        model.set_weights(weights)
        kernel = model.backbone.layers[0].kernel
        start = kernel.numpy().copy()
        model.compile(optimizer=keras.optimizers.SGD(1.0))
        logs = model.train_step((x1, x2))
        return kernel.numpy() - start, start, float(logs["loss"])

    plain, start, plain_loss = conv_step(None)
    decayed, _, decayed_loss = conv_step(keras.regularizers.L2(0.01))
    # d/dw of 0.01 * sum(w^2) is 0.02 * w; the tracked loss stays the SimSiam loss.
    np.testing.assert_allclose(decayed - plain, -0.02 * start, atol=1e-5)
    assert decayed_loss == pytest.approx(plain_loss, abs=1e-6)


def test_call_returns_backbone_features():
    model = models.SimSiam(_resnet(), dim=32, pred_dim=8)
    x, _ = _views(4)
    features = model(x)
    assert features.shape == (4, 64)
    np.testing.assert_array_equal(features, model.backbone(x))
    # The projector's hidden width follows the backbone's feature width.
    assert model.projector.layers[0].units == 64


def test_heads_options_reach_the_heads():
    model = models.SimSiam(_small_backbone(), dim=16, pred_dim=4, heads_bn=False)
    for head in (model.projector, model.predictor):
        assert not any(isinstance(l, keras.layers.BatchNormalization) for l in head.layers)
    synced = models.SimSiam(_small_backbone(), dim=16, pred_dim=4, sync_bn=True, projector_layers=2)
    bns = [
        l
        for h in (synced.projector, synced.predictor)
        for l in h.layers
        if isinstance(l, keras.layers.BatchNormalization)
    ]
    assert len(bns) == 3 and all(bn.synchronized for bn in bns)


def test_mixed_bfloat16_fit_step():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = models.SimSiam(_resnet(), dim=32, pred_dim=8)
    x1, x2 = _views(8)
    p1, p2, z1, z2 = model.forward_views(x1, x2, training=True)
    assert z1.dtype == tf.bfloat16
    assert model.loss_from_outputs(p1, p2, z1, z2).dtype == tf.float32
    assert model(x1).dtype == tf.float32
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), run_eagerly=True)
    before = _values(model.trainable_variables)
    dataset = tf.data.Dataset.from_tensor_slices((x1, x2)).batch(8)
    history = model.fit(dataset, shuffle=False, verbose=0).history
    assert np.isfinite(history["loss"][0]) and -1.0 <= history["loss"][0] <= 1.0
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert any(not np.array_equal(v.numpy(), b) for v, b in zip(model.trainable_variables, before))


def test_mixed_float16_loss_scaling_gives_unscaled_updates():
    """One SGD(lr=1) step under mixed_float16 moves the weights as far as under float32."""
    x1, x2 = _views(8)
    keras.utils.set_random_seed(0)
    weights = models.SimSiam(_resnet(), dim=32, pred_dim=8).get_weights()

    def update(policy):
        keras.mixed_precision.set_global_policy(policy)
        model = models.SimSiam(_resnet(), dim=32, pred_dim=8)
        model.set_weights(weights)
        start = _values(model.trainable_variables)
        model.compile(optimizer=keras.optimizers.SGD(1.0))
        model.train_step((x1, x2))
        step = np.concatenate([(v.numpy() - s).ravel() for v, s in zip(model.trainable_variables, start)])
        return model, step

    _, reference = update("float32")
    model, step = update("mixed_float16")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(model.optimizer.dynamic_scale.numpy()) > 1.0
    ratio = np.linalg.norm(step) / np.linalg.norm(reference)
    cosine = step @ reference / (np.linalg.norm(step) * np.linalg.norm(reference))
    assert 0.9 < ratio < 1.1
    assert cosine > 0.98


@pytest.mark.parametrize("jit_compile", [False, True])
def test_compiled_fit_and_evaluate(jit_compile):
    model = models.SimSiam(_small_backbone(), dim=16, pred_dim=4)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=jit_compile)
    assert model.jit_compile == jit_compile and not model.run_eagerly
    x1, x2 = _views(8)
    dataset = tf.data.Dataset.from_tensor_slices((x1, x2)).batch(4)
    before = _values(model.trainable_variables)
    history = model.fit(dataset, shuffle=False, verbose=0).history
    assert set(history) == METRICS
    assert np.isfinite(history["loss"][0]) and -1.0 <= history["loss"][0] <= 1.0
    assert all(not np.array_equal(v.numpy(), b) for v, b in zip(model.trainable_variables, before))
    after_fit = _values(model.variables)
    logs = model.evaluate(dataset, verbose=0, return_dict=True)
    assert set(logs) == METRICS and np.isfinite(logs["loss"])
    assert all(np.array_equal(v.numpy(), a) for v, a in zip(model.variables, after_fit))
