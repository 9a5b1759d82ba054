"""Optimisation: the linear lr scaling rule, warmup-cosine schedule, PyTorch-style SGD, LARS.

`CoupledSGD` reproduces `torch.optim.SGD` (dampening 0), which the SimSiam reference
trains with. Keras' own `SGD` is a different rule: it folds the learning rate into the
momentum buffer (`v = m * v - lr * g`), so the two diverge as soon as the learning rate
changes from step to step, and its `weight_decay` is decoupled (`w -= lr * wd * w`
outside the momentum) rather than an L2 term added to the gradient.

`LARS` is the layer-wise adaptive rule of the reference's linear probe (apex `LARC`
wrapping that SGD).
"""

import math
import numbers
import re

import keras
import tensorflow as tf

_PACKAGE = "simsiam_tf"


def scaled_lr(base_lr, global_batch_size):
    """The paper's linear scaling rule: `base_lr * global_batch_size / 256`.

    Args:
        base_lr: the learning rate at batch 256 (the recipes' `--base_lr`).
        global_batch_size: the batch over all replicas.

    Returns:
        The learning rate, a float.

    Example:
        >>> scaled_lr(0.05, 512)
        0.1
    """
    base_lr = float(base_lr)
    if base_lr <= 0:
        raise ValueError(f"`base_lr` must be > 0. Received: base_lr={base_lr}")
    global_batch_size = _as_int(global_batch_size, "global_batch_size")
    if global_batch_size < 1:
        raise ValueError(f"`global_batch_size` must be >= 1. Received: global_batch_size={global_batch_size}")
    return base_lr * global_batch_size / 256.0


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup followed by a half-cosine decay to `final_lr`, per step or per epoch.

    Per step (`steps_per_epoch=None`), with `W = warmup_steps` and `T = total_steps`:

    - `step < W`: `peak_lr * (step + 1) / W` (reaches `peak_lr` at step `W - 1`);
    - `step >= W`: `final_lr + (peak_lr - final_lr) * 0.5 * (1 + cos(pi * p))` with
      `p = min((step - W) / (T - W), 1)`, so the rate stays at `final_lr` past `T`.

    Per epoch (`steps_per_epoch=S`), as the reference's `adjust_learning_rate`, which
    sets the rate once at the start of each epoch: the same formula in epochs, with
    `step` replaced by the epoch index `e = floor(step / S)`, `W` by `warmup_steps / S`
    and `T` by `total_steps / S`. The rate is constant within an epoch; the warmup is
    per epoch too (`peak_lr * (e + 1) / W`), so `warmup_steps` and `total_steps` must
    be whole numbers of epochs. Without warmup and with `final_lr=0` this is
    `peak_lr * 0.5 * (1 + cos(pi * e / epochs))`, the reference's rule exactly.

    The value is a float32 tensor; `step` may be a Python number or a tensor (the
    optimizer passes its `iterations` counter).

    Args:
        peak_lr: the rate at the end of the warmup (e.g. `scaled_lr(base_lr, batch)`).
        total_steps: steps of the whole schedule, warmup included.
        warmup_steps: steps of the linear warmup; 0 for none.
        final_lr: the rate at `total_steps` and after.
        steps_per_epoch: None for a per-step schedule; else the rate changes once per
            epoch of this many steps.
    """

    def __init__(self, peak_lr, total_steps, warmup_steps=0, final_lr=0.0, steps_per_epoch=None):
        peak_lr = float(peak_lr)
        final_lr = float(final_lr)
        total_steps = _as_int(total_steps, "total_steps")
        warmup_steps = _as_int(warmup_steps, "warmup_steps")
        if not peak_lr > 0:
            raise ValueError(f"`peak_lr` must be > 0. Received: peak_lr={peak_lr}")
        if warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be >= 0. Received: warmup_steps={warmup_steps}")
        if total_steps <= warmup_steps:
            raise ValueError(
                "`total_steps` must be greater than `warmup_steps`. Received: "
                f"total_steps={total_steps}, warmup_steps={warmup_steps}"
            )
        if not 0.0 <= final_lr <= peak_lr:
            raise ValueError(f"`final_lr` must lie in [0, peak_lr]. Received: final_lr={final_lr}, peak_lr={peak_lr}")
        if steps_per_epoch is not None:
            steps_per_epoch = _as_int(steps_per_epoch, "steps_per_epoch")
            if steps_per_epoch < 1:
                raise ValueError(f"`steps_per_epoch` must be >= 1. Received: steps_per_epoch={steps_per_epoch}")
            for name, value in (("total_steps", total_steps), ("warmup_steps", warmup_steps)):
                if value % steps_per_epoch:
                    raise ValueError(
                        f"A per-epoch schedule needs `{name}` to be a whole number of epochs. Received: "
                        f"{name}={value}, steps_per_epoch={steps_per_epoch}; round the warmup to whole "
                        "epochs or use a per-step schedule (steps_per_epoch=None)."
                    )
        self.peak_lr = peak_lr
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.final_lr = final_lr
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step):
        step = tf.convert_to_tensor(step)
        if self.steps_per_epoch:
            # The epoch index in integers: float32 loses whole steps past 2**24.
            step = tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch)
        step = tf.cast(step, tf.float32)
        peak = tf.constant(self.peak_lr, tf.float32)
        final = tf.constant(self.final_lr, tf.float32)
        unit = float(self.steps_per_epoch or 1)
        warmup = self.warmup_steps / unit
        total = self.total_steps / unit
        warm = peak * (step + 1.0) / max(warmup, 1.0)
        progress = (step - warmup) / (total - warmup)
        progress = tf.clip_by_value(progress, 0.0, 1.0)
        decay = final + (peak - final) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warmup, warm, decay)

    def get_config(self):
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_lr": self.final_lr,
            "steps_per_epoch": self.steps_per_epoch,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CoupledSGD(keras.optimizers.Optimizer):
    """SGD with momentum and coupled L2 weight decay, step for step `torch.optim.SGD`.

    For each variable `w` with gradient `g` (dampening 0):

    ```
    g = g + weight_decay * w          # on every variable, biases and BN included
    buf = momentum * buf + g          # buf starts at zero, so step 1 gives buf = g
    w = w - lr * buf                  # nesterov: w = w - lr * (g + momentum * buf)
    ```

    With `momentum=0` no buffer is kept and `w = w - lr * g`.

    Args:
        learning_rate: float or `LearningRateSchedule` (e.g. `WarmupCosine`).
        momentum: float >= 0.
        weight_decay: coupled L2 coefficient, added to the gradient. It is stored as
            `coupled_weight_decay`; the base class' `weight_decay` stays `None` so
            Keras applies no decoupled decay on top.
        nesterov: Nesterov momentum (needs `momentum > 0`).
        fixed_lr: the learning rate used for `fixed_lr_variables`, whatever the
            schedule says (the reference's `fix_pred_lr`: the predictor keeps the
            initial lr). 0 holds those variables at their current value.
        fixed_lr_variables: variables updated with `fixed_lr`. They are matched by
            identity (the optimizer's variable key), so pass the variables of the
            model being trained, created before the optimizer, and create the
            optimizer in the same distribution-strategy scope. They are not part of
            `get_config()`: pass them again after `from_config`.
        name: the optimizer's name.
        **kwargs: as `keras.optimizers.Optimizer` (clipnorm, use_ema, ...),
            except `weight_decay`, which is this class' own coupled decay.
    """

    def __init__(
        self,
        learning_rate=0.05,
        momentum=0.9,
        weight_decay=0.0,
        nesterov=False,
        fixed_lr=None,
        fixed_lr_variables=None,
        name="coupled_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=_as_lr(learning_rate), name=name, **kwargs)
        momentum, weight_decay = _checked_momentum_and_decay(momentum, weight_decay)
        if nesterov and momentum == 0:
            raise ValueError("`nesterov=True` requires `momentum > 0`.")
        if fixed_lr is not None:
            fixed_lr = float(fixed_lr)
            if not fixed_lr >= 0:
                raise ValueError(f"`fixed_lr` must be >= 0. Received: fixed_lr={fixed_lr}")
        if fixed_lr_variables is not None:
            fixed_lr_variables = list(fixed_lr_variables)
            if not fixed_lr_variables:
                # Usually a model whose variables do not exist yet (not built).
                raise ValueError(
                    "`fixed_lr_variables` is empty: build the model before creating the optimizer, or pass None."
                )
            if fixed_lr is None:
                raise ValueError("`fixed_lr_variables` were given without a `fixed_lr`.")
        self.momentum = momentum
        self.coupled_weight_decay = weight_decay
        self.nesterov = bool(nesterov)
        self.fixed_lr = fixed_lr
        self._fixed_lr_keys = frozenset(self._var_key(v) for v in fixed_lr_variables or ())

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        unknown = self._fixed_lr_keys - set(self._trainable_variables_indices)
        if unknown:
            raise ValueError(
                f"{len(unknown)} of the `fixed_lr_variables` are not among the variables "
                "this optimizer is built on. Create the optimizer after the model is "
                "built, in the same distribution-strategy scope, and pass the model's "
                "own variables."
            )
        self.momentums = []
        if self.momentum != 0:
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        if self._fixed_lr_keys and self._var_key(variable) in self._fixed_lr_keys:
            learning_rate = self.fixed_lr
        lr = tf.cast(learning_rate, dtype)
        g = tf.cast(_dense(gradient), dtype)
        if self.coupled_weight_decay:
            g = g + tf.cast(self.coupled_weight_decay, dtype) * tf.convert_to_tensor(variable)
        if self.momentum != 0:
            momentum = tf.cast(self.momentum, dtype)
            buf = self.momentums[self._get_variable_index(variable)]
            new_buf = momentum * tf.convert_to_tensor(buf) + g
            self.assign(buf, new_buf)
            g = g + momentum * new_buf if self.nesterov else new_buf
        self.assign_sub(variable, lr * g)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        raise ValueError(
            "CoupledSGD decays every variable, as the reference SGD does; `exclude_from_weight_decay` is not supported."
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.coupled_weight_decay,
                "nesterov": self.nesterov,
                "fixed_lr": self.fixed_lr,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LARS(keras.optimizers.Optimizer):
    """SGD with momentum wrapped in layer-wise rate scaling, step for step apex `LARC(clip=False)`.

    The SimSiam reference's LARS probe (`main_lincls.py --lars`) is
    `LARC(torch.optim.SGD(..., weight_decay=wd), trust_coefficient=0.001, clip=False)`.
    For each variable `w` with gradient `g`:

    ```
    if adapted(w) and ||w|| > 0 and ||g|| > 0:
        local_lr = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)
        dp = (g + weight_decay * w) * local_lr
    else:
        dp = g                        # LARC absorbs SGD's decay: none here
    mu = momentum * mu + dp           # mu starts at zero, so step 1 gives mu = dp
    w = w - lr * mu
    ```

    `||g||` is the norm of the raw gradient, before the decay term. Every variable is
    adapted by default, biases included; a zero-initialised bias takes one plain step
    (its norm is 0) and is adapted from then on. With `adapt_rank1=False`, or for
    variables matching `exclude_from_adaptation`, a variable gets the `else` branch on
    every step (no decay, no scaling): the usual LARS exclusion of biases and
    BatchNormalization parameters, not the reference's rule.

    Under a `tf.distribute` strategy the norms are taken on the all-reduced gradient,
    so the update equals the single-device one on the global batch (given a loss
    scaled by `1 / num_replicas`).

    Args:
        learning_rate: float or `LearningRateSchedule`.
        momentum: float >= 0.
        weight_decay: L2 coefficient added to the gradient of adapted variables. It
            is stored as `coupled_weight_decay`; the base class' `weight_decay` stays
            `None`.
        trust_coefficient: the trust coefficient of `local_lr` (apex's default is 0.02,
            the reference passes 0.001).
        epsilon: added to the denominator of `local_lr` (apex's `eps`, 1e-8).
        adapt_rank1: adapt variables of rank <= 1 (biases, BatchNormalization) too, as
            the reference does. False leaves them unadapted and undecayed.
        exclude_from_adaptation: list of regular expressions; a variable whose path
            (`variable.path`, else its name) matches one with `re.search` is left
            unadapted and undecayed.
        name: the optimizer's name.
        **kwargs: as `keras.optimizers.Optimizer`, except `weight_decay`.
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=0.0,
        trust_coefficient=0.001,
        epsilon=1e-8,
        adapt_rank1=True,
        exclude_from_adaptation=None,
        name="lars",
        **kwargs,
    ):
        super().__init__(learning_rate=_as_lr(learning_rate), name=name, **kwargs)
        momentum, weight_decay = _checked_momentum_and_decay(momentum, weight_decay)
        trust_coefficient = float(trust_coefficient)
        epsilon = float(epsilon)
        if not trust_coefficient > 0:
            raise ValueError(f"`trust_coefficient` must be > 0. Received: trust_coefficient={trust_coefficient}")
        if not epsilon >= 0:
            raise ValueError(f"`epsilon` must be >= 0. Received: epsilon={epsilon}")
        if not isinstance(adapt_rank1, bool):
            raise ValueError(f"`adapt_rank1` must be True or False. Received: adapt_rank1={adapt_rank1!r}")
        if isinstance(exclude_from_adaptation, str):
            exclude_from_adaptation = [exclude_from_adaptation]
        self.momentum = momentum
        self.coupled_weight_decay = weight_decay
        self.trust_coefficient = trust_coefficient
        self.epsilon = epsilon
        self.adapt_rank1 = adapt_rank1
        # Tuples, not lists: attribute lists get wrapped by Keras/TF tracking.
        self._exclude_from_adaptation = (
            None if exclude_from_adaptation is None else tuple(str(p) for p in exclude_from_adaptation)
        )
        self._exclude_patterns = tuple(re.compile(p) for p in self._exclude_from_adaptation or ())

    @property
    def exclude_from_adaptation(self):
        if self._exclude_from_adaptation is None:
            return None
        return list(self._exclude_from_adaptation)

    def _is_adapted(self, variable):
        if len(variable.shape) <= 1 and not self.adapt_rank1:
            return False
        path = getattr(variable, "path", None) or variable.name
        return not any(p.search(path) for p in self._exclude_patterns)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # Decided here, on the Keras variables, because `update_step` receives the
        # backend variables, which do not carry the Keras path.
        self._adapted = tuple(self._is_adapted(v) for v in variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        lr = tf.cast(learning_rate, dtype)
        g = tf.cast(_dense(gradient), dtype)
        dp = g
        if self._adapted[index]:
            w = tf.convert_to_tensor(variable)
            wd = tf.cast(self.coupled_weight_decay, dtype)
            w_norm = tf.norm(w)
            g_norm = tf.norm(g)
            local_lr = (
                tf.cast(self.trust_coefficient, dtype) * w_norm / (g_norm + wd * w_norm + tf.cast(self.epsilon, dtype))
            )
            both = (w_norm > 0) & (g_norm > 0)
            # With epsilon 0 and a zero norm the ratio is nan; the select discards it.
            dp = tf.where(both, (g + wd * w) * local_lr, g)
        mu = self.momentums[index]
        new_mu = tf.cast(self.momentum, dtype) * tf.convert_to_tensor(mu) + dp
        self.assign(mu, new_mu)
        self.assign_sub(variable, lr * new_mu)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        raise ValueError(
            "LARS decays exactly the adapted variables; use `exclude_from_adaptation` "
            "(or `adapt_rank1=False`) to leave variables out of both decay and adaptation."
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.coupled_weight_decay,
                "trust_coefficient": self.trust_coefficient,
                "epsilon": self.epsilon,
                "adapt_rank1": self.adapt_rank1,
                "exclude_from_adaptation": self.exclude_from_adaptation,
            }
        )
        return config


def _as_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value:
        raise ValueError(f"`{name}` must be an integer. Received: {name}={value!r}")
    return int(value)


def _checked_momentum_and_decay(momentum, weight_decay):
    """(momentum, weight_decay) as floats, each refused when negative (with Keras' wording)."""
    momentum, weight_decay = float(momentum), float(weight_decay)
    if momentum < 0:
        raise ValueError(f"`momentum` must be >= 0. Received: momentum={momentum}")
    if weight_decay < 0:
        raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay}")
    return momentum, weight_decay


def _as_lr(learning_rate):
    # The base class accepts only a Python float for a constant rate; also take ints
    # and NumPy scalars (e.g. the result of arithmetic on flag values).
    if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
        return float(learning_rate)
    return learning_rate


def _dense(gradient):
    if isinstance(gradient, tf.IndexedSlices):
        return tf.convert_to_tensor(gradient)
    return gradient
