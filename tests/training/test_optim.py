import json
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_tf.optim import LARS, CoupledSGD, WarmupCosine, scaled_lr

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 5
SHAPES = {"kernel": (4, 3), "bias": (3,), "gamma": (3,)}


def _initial_values(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "kernel": rng.normal(size=SHAPES["kernel"]),
        "bias": rng.normal(scale=0.1, size=SHAPES["bias"]),
        "gamma": np.ones(SHAPES["gamma"]),
    }


def _gradients(names_shapes, seed=1):
    rng = np.random.default_rng(seed)
    return [{n: rng.normal(size=s) for n, s in names_shapes.items()} for _ in range(STEPS)]


def _keras_variables(values):
    return {n: keras.Variable(v.astype(np.float32), name=n) for n, v in values.items()}


def _run(optimizer, variables, grads, compiled=False):
    names = list(variables)
    var_list = [variables[n] for n in names]

    def step(gs):
        optimizer.apply(gs, var_list)

    if compiled:
        step = tf.function(step)
    for g in grads:
        step([tf.constant(g[n], tf.float32) for n in names])
    return {n: v.numpy() for n, v in variables.items()}


def _schedule_np(step, peak, total, warmup, final=0.0):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min((step - warmup) / (total - warmup), 1.0)
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))


def _torch_sgd_np(values, grads, lr_of, momentum, weight_decay, nesterov=False):
    """torch.optim.SGD (dampening 0); `lr_of(name, step)` gives each variable's lr."""
    w = {n: v.astype(np.float64).copy() for n, v in values.items()}
    buf = {}
    for step, g_step in enumerate(grads):
        for n in w:
            g = g_step[n] + weight_decay * w[n]
            buf[n] = g.copy() if n not in buf else momentum * buf[n] + g
            d = g + momentum * buf[n] if nesterov else buf[n]
            w[n] = w[n] - lr_of(n, step) * d
    return w


def _larc_np(values, grads, lr_of, momentum, weight_decay, trust, adapted, eps=1e-8):
    """apex `LARC(torch.optim.SGD(momentum, weight_decay), trust, clip=False)`, step by step.

    `LARC.step` takes the group's weight decay away from SGD; for a parameter whose
    weight and gradient norms are both non-zero it adds `wd * p` to the gradient and
    scales it by `trust * ||p|| / (||g|| + ||p|| * wd + eps)`; then SGD steps with
    weight decay 0 (buf = g on the first step, `momentum * buf + g` after). `adapted`
    names the parameters LARC sees; the others get the inner SGD step with no decay.
    """
    w = {n: v.astype(np.float64).copy() for n, v in values.items()}
    buf = {}
    for step, g_step in enumerate(grads):
        for n in w:
            g = g_step[n].astype(np.float64).copy()
            param_norm, grad_norm = np.linalg.norm(w[n]), np.linalg.norm(g)
            if adapted[n] and param_norm != 0 and grad_norm != 0:
                adaptive_lr = trust * param_norm / (grad_norm + param_norm * weight_decay + eps)
                g += weight_decay * w[n]
                g *= adaptive_lr
            buf[n] = g.copy() if n not in buf else momentum * buf[n] + g
            w[n] = w[n] - lr_of(step) * buf[n]
    return w


def _assert_close(actual, expected, atol=1e-6):
    for n in expected:
        np.testing.assert_allclose(actual[n], expected[n], rtol=1e-6, atol=atol, err_msg=n)


def test_scaled_lr():
    assert scaled_lr(0.05, 256) == pytest.approx(0.05)
    assert scaled_lr(0.05, 512) == pytest.approx(0.1)
    assert scaled_lr(0.03, 64) == pytest.approx(0.0075)
    with pytest.raises(ValueError):
        scaled_lr(0.05, 0)
    with pytest.raises(ValueError):
        scaled_lr(-0.1, 256)
    with pytest.raises(ValueError):
        scaled_lr(0.05, 12.5)


def test_warmup_cosine_values():
    peak, total, warmup, final = 0.8, 100, 10, 0.01
    s = WarmupCosine(peak, total_steps=total, warmup_steps=warmup, final_lr=final)
    expected = {
        0: peak / warmup,
        4: peak * 5 / warmup,
        9: peak,
        10: peak,
        55: final + (peak - final) * 0.5,
        100: final,
        250: final,
    }
    for step, value in expected.items():
        assert float(s(step)) == pytest.approx(value, rel=1e-6), step
        assert float(s(step)) == pytest.approx(_schedule_np(step, peak, total, warmup, final), rel=1e-6)
    compiled = tf.function(lambda step: s(step))
    out = compiled(tf.constant(55, tf.int64))
    assert out.dtype == tf.float32
    assert float(out) == pytest.approx(expected[55], rel=1e-6)
    no_warmup = WarmupCosine(0.2, total_steps=4)
    np.testing.assert_allclose(
        [float(no_warmup(i)) for i in range(5)],
        [0.2, 0.1 + 0.1 * math.cos(math.pi / 4), 0.1, 0.1 + 0.1 * math.cos(3 * math.pi / 4), 0.0],
        rtol=1e-6,
        atol=1e-7,
    )


def _reference_epoch_lr(init_lr, epoch, epochs):
    """main_simsiam.py / main_lincls.py `adjust_learning_rate`, called at the start of each epoch."""
    return init_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def test_per_epoch_schedule_is_the_reference_rule():
    init_lr, epochs, steps_per_epoch = 0.1, 5, 3
    s = WarmupCosine(init_lr, total_steps=epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    got = [float(s(step)) for step in range(epochs * steps_per_epoch)]
    expected = [_reference_epoch_lr(init_lr, step // steps_per_epoch, epochs) for step in range(len(got))]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[0] == got[1] == got[2] == pytest.approx(init_lr)
    # Past the end it stays at final_lr, as the per-step schedule.
    assert float(s(epochs * steps_per_epoch + 7)) == pytest.approx(0.0, abs=1e-9)
    per_step = WarmupCosine(init_lr, total_steps=epochs * steps_per_epoch)
    assert abs(float(per_step(4)) - got[4]) > 1e-3
    # Compiled, on the optimizer's int64 counter, and exact at steps float32 cannot count.
    compiled = tf.function(lambda step: s(step))
    assert float(compiled(tf.constant(7, tf.int64))) == pytest.approx(expected[7], rel=1e-6)
    big = WarmupCosine(init_lr, total_steps=7 * 2**23, steps_per_epoch=7)
    edge = 7 * 2**22
    for step in (edge - 1, edge):
        assert float(big(tf.constant(step, tf.int64))) == pytest.approx(
            _reference_epoch_lr(init_lr, step // 7, 2**23), rel=1e-6
        ), step


def test_per_epoch_schedule_with_warmup_and_final_lr():
    peak, final, epochs, warmup_epochs, steps_per_epoch = 0.8, 0.01, 10, 2, 4
    s = WarmupCosine(
        peak,
        total_steps=epochs * steps_per_epoch,
        warmup_steps=warmup_epochs * steps_per_epoch,
        final_lr=final,
        steps_per_epoch=steps_per_epoch,
    )
    for step in range(epochs * steps_per_epoch + 5):
        epoch = step // steps_per_epoch
        if epoch < warmup_epochs:
            expected = peak * (epoch + 1) / warmup_epochs
        else:
            progress = min((epoch - warmup_epochs) / (epochs - warmup_epochs), 1.0)
            expected = final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))
        assert float(s(step)) == pytest.approx(expected, rel=1e-6), step
    with pytest.raises(ValueError, match="whole number of epochs.*warmup_steps=3"):
        WarmupCosine(peak, total_steps=40, warmup_steps=3, steps_per_epoch=4)
    with pytest.raises(ValueError, match="whole number of epochs.*total_steps=41"):
        WarmupCosine(peak, total_steps=41, steps_per_epoch=4)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        WarmupCosine(peak, total_steps=40, steps_per_epoch=0)


def test_coupled_sgd_with_per_epoch_schedule_and_fixed_predictor_lr():
    # The reference's pretraining step: lr set per epoch, the predictor at init_lr (fix_pred_lr).
    values = _initial_values()
    grads = _gradients(SHAPES)
    init_lr, wd, steps_per_epoch, epochs = 0.4, 1e-2, 2, 3
    variables = _keras_variables(values)
    opt = CoupledSGD(
        WarmupCosine(init_lr, total_steps=steps_per_epoch * epochs, steps_per_epoch=steps_per_epoch),
        weight_decay=wd,
        fixed_lr=init_lr,
        fixed_lr_variables=[variables["gamma"]],
    )
    got = _run(opt, variables, grads, compiled=True)

    def lr_of(name, step):
        return init_lr if name == "gamma" else _reference_epoch_lr(init_lr, step // steps_per_epoch, epochs)

    _assert_close(got, _torch_sgd_np(values, grads, lr_of, 0.9, wd))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(peak_lr=0.1, total_steps=10, warmup_steps=10),
        dict(peak_lr=0.1, total_steps=10, warmup_steps=-1),
        dict(peak_lr=0.0, total_steps=10),
        dict(peak_lr=0.1, total_steps=10, final_lr=0.2),
        dict(peak_lr=0.1, total_steps=10.5),
    ],
)
def test_warmup_cosine_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        WarmupCosine(**kwargs)


@pytest.mark.parametrize("nesterov", [False, True])
def test_coupled_sgd_matches_torch_rule_with_per_step_schedule(nesterov):
    values = _initial_values()
    grads = _gradients(SHAPES)
    peak, total, warmup, wd = 0.4, 6, 2, 0.05
    opt = CoupledSGD(
        WarmupCosine(peak, total_steps=total, warmup_steps=warmup),
        momentum=0.9,
        weight_decay=wd,
        nesterov=nesterov,
    )
    got = _run(opt, _keras_variables(values), grads, compiled=True)
    expected = _torch_sgd_np(values, grads, lambda n, step: _schedule_np(step, peak, total, warmup), 0.9, wd, nesterov)
    _assert_close(got, expected)
    assert int(opt.iterations) == STEPS
    assert opt.weight_decay is None  # no decoupled decay from the base class

    # Keras' SGD (lr folded into the buffer, decoupled decay) is a different rule.
    keras_sgd = keras.optimizers.SGD(
        WarmupCosine(peak, total_steps=total, warmup_steps=warmup),
        momentum=0.9,
        weight_decay=wd,
        nesterov=nesterov,
    )
    other = _run(keras_sgd, _keras_variables(values), grads)
    assert max(np.abs(other[n] - expected[n]).max() for n in expected) > 1e-3


def test_coupled_sgd_without_momentum():
    values = _initial_values()
    grads = _gradients(SHAPES)
    opt = CoupledSGD(0.1, momentum=0.0, weight_decay=0.01)
    got = _run(opt, _keras_variables(values), grads)
    _assert_close(got, _torch_sgd_np(values, grads, lambda n, s: 0.1, 0.0, 0.01))
    assert opt.momentums == []


def test_fixed_lr_variables_keep_fixed_lr():
    values = _initial_values()
    grads = _gradients(SHAPES)
    peak, total, warmup, wd, fixed = 0.4, 6, 2, 0.01, 0.3
    variables = _keras_variables(values)
    opt = CoupledSGD(
        WarmupCosine(peak, total_steps=total, warmup_steps=warmup),
        weight_decay=wd,
        fixed_lr=fixed,
        fixed_lr_variables=[variables["kernel"], variables["bias"]],
    )
    got = _run(opt, variables, grads, compiled=True)

    def lr_of(name, step):
        return fixed if name in ("kernel", "bias") else _schedule_np(step, peak, total, warmup)

    _assert_close(got, _torch_sgd_np(values, grads, lr_of, 0.9, wd))


def test_zero_fixed_lr_holds_variables():
    values = _initial_values()
    variables = _keras_variables(values)
    opt = CoupledSGD(0.1, weight_decay=0.01, fixed_lr=0.0, fixed_lr_variables=[variables["gamma"]])
    got = _run(opt, variables, _gradients(SHAPES))
    np.testing.assert_array_equal(got["gamma"], values["gamma"].astype(np.float32))
    assert np.abs(got["kernel"] - values["kernel"]).max() > 1e-2


def test_fixed_lr_argument_errors():
    v = keras.Variable(np.ones((2,), np.float32))
    with pytest.raises(ValueError, match="fixed_lr"):
        CoupledSGD(0.1, fixed_lr_variables=[v])
    with pytest.raises(ValueError, match="empty"):
        CoupledSGD(0.1, fixed_lr=0.1, fixed_lr_variables=[])
    with pytest.raises(ValueError):
        CoupledSGD(0.1, fixed_lr=-0.1)
    stranger = keras.Variable(np.ones((2,), np.float32))
    opt = CoupledSGD(0.1, fixed_lr=0.1, fixed_lr_variables=[stranger])
    with pytest.raises(ValueError, match="not among the variables"):
        opt.apply([tf.ones((2,))], [v])
    with pytest.raises(ValueError):
        CoupledSGD(0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ValueError):
        CoupledSGD(0.1).exclude_from_weight_decay(var_names=["bias"])


def _lars_case():
    """Variables and gradients that visit every branch of the reference rule."""
    values = _initial_values()
    values["zero_bias"] = np.zeros((3,))  # as the probe's bias: norm 0, plain first step
    values["head_kernel"] = np.random.default_rng(2).normal(size=(3, 2))
    values["frozen_out"] = np.random.default_rng(4).normal(size=(2, 2))
    grads = _gradients({n: v.shape for n, v in values.items()}, seed=3)
    for step in (0, 1, 3):  # a variable whose gradient is zero on some steps
        grads[step]["frozen_out"] = np.zeros((2, 2))
    return values, grads


def test_lars_matches_apex_larc():
    values, grads = _lars_case()
    momentum, wd, trust = 0.9, 0.05, 0.01
    schedule = WarmupCosine(2.0, total_steps=6, steps_per_epoch=2)
    opt = LARS(schedule, momentum=momentum, weight_decay=wd, trust_coefficient=trust)
    assert opt.adapt_rank1 and opt.epsilon == 1e-8
    got = _run(opt, _keras_variables(values), grads, compiled=True)
    expected = _larc_np(
        values, grads, lambda step: float(schedule(step)), momentum, wd, trust, dict.fromkeys(values, True)
    )
    _assert_close(got, expected)
    # The zero bias took one plain step (lr * g), then adapted steps, far smaller than plain SGD's.
    plain = _torch_sgd_np(values, grads, lambda n, step: float(schedule(step)), momentum, 0.0)
    assert np.abs(got["zero_bias"] - plain["zero_bias"]).max() > 0.5
    one_step = _larc_np(values, grads[:1], lambda step: 2.0, momentum, wd, trust, dict.fromkeys(values, True))
    np.testing.assert_allclose(one_step["zero_bias"], -2.0 * grads[0]["zero_bias"])


def test_lars_rank1_and_pattern_exclusion():
    values, grads = _lars_case()
    lr, momentum, wd, trust = 1.0, 0.9, 0.05, 0.01
    adapted = {n: len(v.shape) > 1 and not n.startswith("head") for n, v in values.items()}
    assert adapted["kernel"] and not adapted["bias"] and not adapted["head_kernel"]
    opt = LARS(
        lr,
        momentum=momentum,
        weight_decay=wd,
        trust_coefficient=trust,
        adapt_rank1=False,
        exclude_from_adaptation=["head"],
    )
    got = _run(opt, _keras_variables(values), grads, compiled=True)
    _assert_close(got, _larc_np(values, grads, lambda step: lr, momentum, wd, trust, adapted))
    # Only the pattern: rank-1 variables are adapted, "head_kernel" is not.
    adapted = {n: not n.startswith("head") for n in values}
    opt = LARS(lr, momentum=momentum, weight_decay=wd, trust_coefficient=trust, exclude_from_adaptation="head")
    got = _run(opt, _keras_variables(values), grads)
    _assert_close(got, _larc_np(values, grads, lambda step: lr, momentum, wd, trust, adapted))


def test_lars_single_step_by_hand():
    lr, wd, trust, eps = 0.5, 1.0, 0.001, 1e-3
    kernel = keras.Variable(np.full((2, 2), 2.0, np.float32), name="kernel")
    bias = keras.Variable(np.full((2,), 2.0, np.float32), name="bias")
    zero = keras.Variable(np.zeros((2,), np.float32), name="zero")
    still = keras.Variable(np.full((2,), 2.0, np.float32), name="still")
    g2, g1 = np.full((2, 2), 3.0, np.float32), np.full((2,), 3.0, np.float32)
    opt = LARS(lr, weight_decay=wd, trust_coefficient=trust, epsilon=eps)
    opt.apply([tf.constant(g2), tf.constant(g1), tf.constant(g1), tf.zeros((2,))], [kernel, bias, zero, still])
    # ||w|| = 4, ||g|| = 6 (kernel); ||w|| = ||g|| = 2.83, 4.24 (bias).
    q = trust * 4.0 / (6.0 + wd * 4.0 + eps)
    np.testing.assert_allclose(kernel.numpy(), 2.0 - lr * q * (3.0 + wd * 2.0), rtol=1e-6)
    w_norm, g_norm = math.sqrt(8.0), math.sqrt(18.0)
    q = trust * w_norm / (g_norm + wd * w_norm + eps)
    np.testing.assert_allclose(bias.numpy(), 2.0 - lr * q * (3.0 + wd * 2.0), rtol=1e-6)
    # ||w|| = 0: no decay, no scaling. ||g|| = 0: no decay either, so the variable stays put.
    np.testing.assert_allclose(zero.numpy(), -lr * 3.0, rtol=1e-6)
    np.testing.assert_array_equal(still.numpy(), [2.0, 2.0])
    with pytest.raises(ValueError, match="exclude_from_adaptation"):
        opt.exclude_from_weight_decay(var_names=["bias"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(trust_coefficient=0.0), "trust_coefficient"),
        (dict(epsilon=-1.0), "epsilon"),
        (dict(adapt_rank1="no"), "adapt_rank1"),
        (dict(momentum=-0.1), "momentum"),
        (dict(weight_decay=-1e-4), "weight_decay"),
    ],
)
def test_lars_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LARS(0.1, **kwargs)


def test_schedule_config_round_trip():
    s = WarmupCosine(0.3, total_steps=50, warmup_steps=5, final_lr=0.001)
    assert WarmupCosine.from_config(s.get_config()).get_config() == s.get_config()
    per_epoch = WarmupCosine(0.3, total_steps=50, warmup_steps=5, steps_per_epoch=5)
    restored = WarmupCosine.from_config(json.loads(json.dumps(per_epoch.get_config())))
    assert restored.steps_per_epoch == 5 and float(restored(9)) == pytest.approx(float(per_epoch(9)))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert isinstance(restored, WarmupCosine)
    assert restored.get_config() == s.get_config()
    assert float(restored(17)) == pytest.approx(float(s(17)))


def test_optimizer_config_round_trip():
    sgd = CoupledSGD(
        WarmupCosine(0.3, total_steps=50, warmup_steps=5),
        momentum=0.8,
        weight_decay=5e-4,
        nesterov=True,
        fixed_lr=0.3,
        clipnorm=1.0,
    )
    config = sgd.get_config()
    assert config["weight_decay"] == 5e-4 and config["fixed_lr"] == 0.3
    assert "fixed_lr_variables" not in config
    for restored in (
        CoupledSGD.from_config(sgd.get_config()),
        keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(sgd)))),
    ):
        assert isinstance(restored, CoupledSGD)
        assert isinstance(restored._learning_rate, WarmupCosine)
        assert restored.get_config() == config

    lars = LARS(
        0.2,
        momentum=0.95,
        weight_decay=1e-6,
        trust_coefficient=0.002,
        epsilon=1e-6,
        adapt_rank1=False,
        exclude_from_adaptation=["head"],
    )
    restored = keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(lars))))
    assert isinstance(restored, LARS)
    assert restored.get_config() == lars.get_config()
    assert restored.get_config()["exclude_from_adaptation"] == ["head"]
    assert restored.adapt_rank1 is False and restored.epsilon == 1e-6


def test_fit_and_saved_model_reload_optimizer(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(8, 2)).astype(np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    opt = CoupledSGD(
        WarmupCosine(0.1, total_steps=10, warmup_steps=2),
        weight_decay=1e-4,
        fixed_lr=0.05,
        fixed_lr_variables=[model.layers[0].bias],
    )
    model.compile(optimizer=opt, loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, CoupledSGD)
    assert loaded.optimizer.get_config() == opt.get_config()
    assert int(loaded.optimizer.iterations) == 2
    for a, b in zip(loaded.optimizer.variables, opt.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import os

    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras

    from simsiam_tf.optim import LARS, CoupledSGD, WarmupCosine

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    keras.utils.set_random_seed(1)
    init = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)]
    ).get_weights()


    def make(kind):
        model = keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)]
        )
        model.set_weights(init)
        if kind == "lars":
            opt = LARS(0.5, weight_decay=0.01, trust_coefficient=0.01)
        else:
            opt = CoupledSGD(
                WarmupCosine(0.3, total_steps=6, warmup_steps=2),
                weight_decay=0.01,
                fixed_lr=0.2,
                fixed_lr_variables=model.layers[-1].trainable_variables,
            )
        # As `fit` does: optimizer variables are created before tracing the step.
        opt.build(model.trainable_variables)
        return model, opt


    def step_fn(model, opt, xb, yb, scale):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb) - yb)) * scale
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)


    def single(kind, steps):
        model, opt = make(kind)
        for _ in range(steps):
            step_fn(model, opt, x, y, 1.0)
        return [v.numpy() for v in model.trainable_variables]


    def mirrored(kind, steps):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        n = strategy.num_replicas_in_sync
        with strategy.scope():
            model, opt = make(kind)
        half = len(x) // n

        def shard(arr):
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.constant(
                    arr[ctx.replica_id_in_sync_group * half:(ctx.replica_id_in_sync_group + 1) * half]
                )
            )

        xd, yd = shard(x), shard(y)
        fn = tf.function(lambda: strategy.run(step_fn, args=(model, opt, xd, yd, 1.0 / n)))
        for _ in range(steps):
            fn()
        return n, [v.numpy() for v in model.trainable_variables]


    result = {}
    for kind in ("lars", "sgd"):
        ref = single(kind, 3)
        n, dist = mirrored(kind, 3)
        result[kind] = {
            "replicas": n,
            "max_diff": max(float(np.abs(a - b).max()) for a, b in zip(ref, dist)),
            "moved": min(float(np.abs(a - b).max()) for a, b in zip(ref, init)),
        }
    print("RESULT " + json.dumps(result))
    """
)


def test_optimizers_under_mirrored_strategy_match_single_device(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, env=env, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    for kind, r in result.items():
        assert r["replicas"] == 2, kind
        assert r["moved"] > 1e-4, kind
        assert r["max_diff"] < 1e-5, (kind, r)
