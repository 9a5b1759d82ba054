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


def build_projector(
    in_dim,
    dim=2048,
    hidden_dim=None,
    num_layers=3,
    use_bn=True,
    sync_bn=False,
    name="projector",
):
    """Projection MLP g: [N, in_dim] -> [N, dim].

    (num_layers - 1) x [Dense(hidden, no bias) - BN - ReLU], then Dense(dim, no bias) -
    BN(no centre, no scale). `hidden_dim` defaults to `in_dim` (the reference uses the
    backbone width); `num_layers=2` is the CIFAR recipe. `use_bn=False` is the paper's
    no-BN ablation: no BN anywhere, and the Dense layers get biases.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    hidden_dim = hidden_dim or in_dim
    stack = [keras.Input(shape=(in_dim,), name=f"{name}_input")]
    fan_in = in_dim
    for i in range(1, num_layers):
        stack.append(_dense(hidden_dim, fan_in, not use_bn, f"{name}_fc{i}"))
        if use_bn:
            stack.append(_bn(f"{name}_bn{i}", sync_bn))
        stack.append(layers.ReLU(name=f"{name}_relu{i}"))
        fan_in = hidden_dim
    stack.append(_dense(dim, fan_in, not use_bn, f"{name}_fc{num_layers}"))
    if use_bn:
        stack.append(_bn(f"{name}_bn{num_layers}", sync_bn, center=False, scale=False))
    return keras.Sequential(stack, name=name)


def build_predictor(dim=2048, pred_dim=512, use_bn=True, sync_bn=False, name="predictor"):
    """Prediction MLP h: [N, dim] -> [N, dim] with a pred_dim bottleneck.

    Dense(pred_dim, no bias) - BN - ReLU - Dense(dim, with bias). With `use_bn=False`
    the BN goes and the first Dense gets a bias.
    """
    stack = [
        keras.Input(shape=(dim,), name=f"{name}_input"),
        _dense(pred_dim, dim, not use_bn, f"{name}_fc1"),
    ]
    if use_bn:
        stack.append(_bn(f"{name}_bn1", sync_bn))
    stack.append(layers.ReLU(name=f"{name}_relu1"))
    stack.append(_dense(dim, pred_dim, True, f"{name}_fc2"))
    return keras.Sequential(stack, name=name)
