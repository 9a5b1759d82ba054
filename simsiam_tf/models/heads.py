"""SimSiam's projection MLP and prediction MLP, initialised as PyTorch's defaults."""

import math

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="simsiam_tf")
class FanInUniform(keras.initializers.RandomUniform):
    """uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)): the default bias init of PyTorch's Linear.

    A bias shape holds no fan-in, so the layer's input width is given up front.
    """

    def __init__(self, fan_in, seed=None):
        if fan_in <= 0:
            raise ValueError(f"fan_in must be positive, got {fan_in}")
        self.fan_in = int(fan_in)
        bound = 1.0 / math.sqrt(self.fan_in)
        super().__init__(minval=-bound, maxval=bound, seed=seed)

    def get_config(self):
        config = super().get_config()
        config.pop("minval")
        config.pop("maxval")
        config["fan_in"] = self.fan_in
        return config


def kernel_init():
    """A new initializer of PyTorch's `nn.Linear` weights: uniform in +-1/sqrt(fan_in).

    Returns:
        A `keras.initializers.VarianceScaling` (scale 1/3, fan_in, uniform).
    """
    # PyTorch Linear: kaiming_uniform_(a=sqrt(5)) = uniform(+-1/sqrt(fan_in)). A fresh
    # instance per layer: an unseeded Keras initializer repeats its values on each call.
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


def _dense(units, fan_in, use_bias, name):
    return layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=kernel_init(),
        bias_initializer=FanInUniform(fan_in) if use_bias else "zeros",
        name=name,
    )


def _bn(name, sync_bn, center=True, scale=True):
    return layers.BatchNormalization(
        momentum=0.9,
        epsilon=1e-5,
        center=center,
        scale=scale,
        synchronized=sync_bn,
        name=name,
    )


# Where the heads put BatchNormalization (the paper's Table 3): after every Dense, after
# the hidden Dense layers only, or nowhere. A Dense not followed by BN gets a bias.
BN_PLACEMENTS = ("all", "hidden", "none")


def resolve_bn(bn, use_bn, default, who):
    """The BN placement a head builds: `bn`, or without it `default` (`use_bn`) or "none"; ValueError on a contradiction."""
    if bn is None:
        return default if use_bn else "none"
    if bn not in BN_PLACEMENTS:
        raise ValueError(f"{who} bn must be one of {', '.join(BN_PLACEMENTS)}; got {bn!r}")
    if not use_bn and bn != "none":
        raise ValueError(f"{who}: use_bn=False contradicts bn={bn!r}; pass only bn (use_bn=False means bn='none')")
    return bn


def build_projector(
    in_dim,
    dim=2048,
    hidden_dim=None,
    num_layers=3,
    use_bn=True,
    sync_bn=False,
    name="projector",
    bn=None,
):
    """Projection MLP g: [N, in_dim] -> [N, dim].

    (num_layers - 1) x [Dense(hidden, no bias) - BN - ReLU], then Dense(dim, no bias) -
    BN(no centre, no scale). `hidden_dim` defaults to `in_dim` (the reference uses the
    backbone width; the paper's "hidden fc is 2048-d" for ResNet-50); `num_layers=2` is
    the CIFAR recipe.

    `bn`, Table 3's variants: "all" (the default and the reference, Table 3c),
    "hidden" (BN after the hidden layers only, the output Dense with a bias; 3b), or
    "none" (no BN anywhere, every Dense with a bias; 3a). `use_bn=False` is the older
    spelling of `bn="none"`.

    Args:
        in_dim: width of the backbone's features.
        dim: output width.
        hidden_dim: width of the hidden layers; None is `in_dim`.
        num_layers: 3 (ImageNet recipe) or 2 (CIFAR recipe).
        use_bn: False is `bn="none"`.
        sync_bn: synchronised BatchNorm across replicas.
        name: the model's name.
        bn: "all", "hidden" or "none"; None follows `use_bn`.

    Returns:
        A `keras.Model`.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if hidden_dim is not None and (int(hidden_dim) != hidden_dim or hidden_dim < 1):
        raise ValueError(f"hidden_dim must be a positive integer or None (the input width), got {hidden_dim}")
    bn = resolve_bn(bn, use_bn, "all", "projector")
    return _mlp(in_dim, int(hidden_dim or in_dim), dim, num_layers, bn, sync_bn, name)


def build_predictor(dim=2048, pred_dim=512, use_bn=True, sync_bn=False, name="predictor", bn=None):
    """Prediction MLP h: [N, dim] -> [N, dim] with a pred_dim bottleneck.

    Dense(pred_dim, no bias) - BN - ReLU - Dense(dim, with bias).

    `bn`: "hidden" (the default and the reference), "all" (BN on the output too, the
    paper's Table 3d, which it reports unstable; the output Dense then has no bias and
    its BN no centre or scale, as the projector's output BN: the paper does not say
    which), or "none" (both Dense with a bias). `use_bn=False` is `bn="none"`.

    Args:
        dim: input and output width (the projector's output width).
        pred_dim: bottleneck width.
        use_bn: False is `bn="none"`.
        sync_bn: synchronised BatchNorm across replicas.
        name: the model's name.
        bn: "hidden", "all" or "none"; None follows `use_bn`.

    Returns the `keras.Model`, as `build_projector` does.
    """
    bn = resolve_bn(bn, use_bn, "hidden", "predictor")
    return _mlp(dim, pred_dim, dim, 2, bn, sync_bn, name)


def _mlp(in_dim, hidden_dim, out_dim, num_layers, bn, sync_bn, name):
    """`num_layers` Dense layers, ReLU between them; BN after the hidden ones ("all", "hidden") and the output ("all").

    A Dense followed by BN has no bias; the output BN has no centre or scale.
    """
    hidden_bn, output_bn = bn in ("all", "hidden"), bn == "all"
    stack = [keras.Input(shape=(in_dim,), name=f"{name}_input")]
    fan_in = in_dim
    for i in range(1, num_layers):
        stack.append(_dense(hidden_dim, fan_in, not hidden_bn, f"{name}_fc{i}"))
        if hidden_bn:
            stack.append(_bn(f"{name}_bn{i}", sync_bn))
        stack.append(layers.ReLU(name=f"{name}_relu{i}"))
        fan_in = hidden_dim
    stack.append(_dense(out_dim, fan_in, not output_bn, f"{name}_fc{num_layers}"))
    if output_bn:
        stack.append(_bn(f"{name}_bn{num_layers}", sync_bn, center=False, scale=False))
    return keras.Sequential(stack, name=name)
