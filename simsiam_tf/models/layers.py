"""The building blocks of the package's encoders: layers and the residual blocks, as torchvision builds them.

`ImageNormalization` (constant mean/std), `FusedBatchNormalization` (TensorFlow's fused
kernel where it applies), `Conv2D` (a faster filter gradient on small feature maps on
CPU), and the conv, BatchNorm and residual-block helpers the ResNets
(`simsiam_tf.models.backbones`) and the small-image encoders
(`simsiam_tf.models.small_backbones`) are made of.
"""

import functools

import keras
import tensorflow as tf
from keras import layers, ops

from simsiam_tf.augment.photometric import GRAY_WEIGHTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Output channels of a residual block per `planes`.
EXPANSION = {"basic": 1, "bottleneck": 4}


@keras.saving.register_keras_serializable(package="simsiam_tf")
class ImageNormalization(layers.Layer):
    """(x - mean) / std per channel with constant statistics; holds no weights.

    `luma=True` first replaces each RGB pixel by its luma (ITU-R 601-2 weights, as PIL's
    "L" conversion) in all three channels: the encoder then sees shape and brightness,
    never colour (`--input_colour=luma`).
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, luma=False, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.luma = bool(luma)
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std differ in length: {self.mean} vs {self.std}")

    def call(self, x):
        if self.luma:
            weights = ops.convert_to_tensor(GRAY_WEIGHTS, dtype=x.dtype)
            x = ops.repeat(ops.sum(x * weights, axis=-1, keepdims=True), 3, axis=-1)
        mean = ops.convert_to_tensor(self.mean, dtype=x.dtype)
        std = ops.convert_to_tensor(self.std, dtype=x.dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std), luma=self.luma)
        return config


@keras.saving.register_keras_serializable(package="simsiam_tf")
class FusedBatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel where it can.

    Same weights, arguments and results as the Keras layer (batch statistics in
    training, the biased batch variance in the moving average, the same epsilon), but
    the normalisation, its statistics and its gradient each run as one fused op
    (`FusedBatchNormV3`, oneDNN's on CPU, cuDNN's on GPU) instead of a dozen
    elementwise ops and reductions over the feature map. Half-precision inputs are
    normalised in float32 inside the kernel, as the Keras layer does by casting.

    Falls back to the Keras computation for what the kernel does not do: synchronized
    (cross-replica) statistics, masks, renorm, an axis other than the last, inputs of
    rank other than 2 or 4, float64; and always with `fused=False` (the attribute may
    be changed before the model is traced, e.g. to time one against the other).
    """

    def __init__(self, *args, fused=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = bool(fused)

    def get_config(self):
        config = super().get_config()
        config["fused"] = self.fused
        return config

    def _fusable(self, inputs, mask):
        rank = len(inputs.shape)
        axis = self.axis % rank if rank else self.axis
        return (
            self.fused
            and not self.synchronized
            and mask is None
            and not self.renorm
            and rank in (2, 4)
            and axis == rank - 1
            and inputs.dtype in (tf.float32, tf.bfloat16, tf.float16)
        )

    def call(self, inputs, training=None, mask=None):
        inputs = tf.convert_to_tensor(inputs)
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = inputs
        channels = self.moving_mean.shape[0]
        shape = tf.shape(x)
        if len(x.shape) == 2:
            x = tf.reshape(x, [-1, 1, 1, channels])
        scale = tf.convert_to_tensor(self.gamma) if self.scale else tf.ones([channels], tf.float32)
        offset = tf.convert_to_tensor(self.beta) if self.center else tf.zeros([channels], tf.float32)
        scale = tf.cast(scale, tf.float32)
        offset = tf.cast(offset, tf.float32)
        moving_mean = tf.cast(tf.convert_to_tensor(self.moving_mean), tf.float32)
        moving_variance = tf.cast(tf.convert_to_tensor(self.moving_variance), tf.float32)
        epsilon = self.epsilon
        if tf.config.list_logical_devices("GPU"):
            # cuDNN rejects epsilon < 1e-5, and float32(1e-5) is just below it.
            epsilon = max(epsilon, 1.001e-5)
        fused = functools.partial(
            tf.raw_ops.FusedBatchNormV3,
            x=x,
            scale=scale,
            offset=offset,
            epsilon=epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
        )
        if training and self.trainable:
            empty = tf.zeros([0], tf.float32)
            y, mean, unbiased_variance, _, _, _ = fused(mean=empty, variance=empty, is_training=True)
            # The kernel returns the unbiased (n / (n - 1)) variance; the Keras layer
            # keeps the biased one in its moving average.
            count = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)
            variance = unbiased_variance * tf.math.divide_no_nan(count - 1.0, count)
            mean = tf.stop_gradient(mean)
            variance = tf.stop_gradient(variance)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y = fused(mean=moving_mean, variance=moving_variance, is_training=False)[0]
        if len(inputs.shape) == 2:
            y = tf.reshape(y, shape)
        return tf.cast(y, self.compute_dtype)


# Convolutions whose output has at most this many positions (H x W) take the filter
# gradient as a forward convolution (see `Conv2D`); the oneDNN backward-weights kernel
# is the faster one on larger feature maps.
SMALL_MAP_POSITIONS = 64


def small_map_grad_by_default(dtype_name):
    """Whether `Conv2D` computes small-map filter gradients as forward convolutions by default.

    Chosen from the step measured with the rewrite on and off (bench/RESULTS.md, "The
    small-map filter gradient per CPU kind"): in bfloat16 it was faster on every CPU
    kind measured, with native kernels (AVX-512 BF16 on AMD Zen 4, AMX on an Intel
    Xeon: 1.07-1.10x per CPU second) and with emulated ones (TensorFlow's own bfloat16
    kernels, as a CPU without native bfloat16 runs them: 1.26x); in float32 it was
    slower on every kind (AMX host 0.93x, the same host capped to AVX2 0.98x, Zen 4
    at 4x4 maps). So the dtype decides, not the ISA. float16 follows bfloat16 (the
    same kernels' structure; not measured separately).
    """
    return dtype_name in ("bfloat16", "float16")


def _filter_grad_as_conv(x, dy, kernel_size, strides, padding):
    """dL/dW of a convolution, computed as a forward convolution of x with dy.

    dW[i, j, c, o] = sum over n, h, w of x_pad[n, s*h + i, s*w + j, c] * dy[n, h, w, o]:
    a VALID convolution of x_pad read as [c, H, W, n] (channels as the batch, the batch
    as channels) with dy read as the filter [h, w, n, o], dilated by the stride.
    """
    kh, kw = kernel_size
    sh, sw = strides
    out_h, out_w = dy.shape[1], dy.shape[2]
    if padding == "same":
        # Stride 1 only (see `Conv2D._small_map_grad`): PyTorch-style symmetric padding.
        x = tf.pad(x, [[0, 0], [kh // 2, (kh - 1) // 2], [kw // 2, (kw - 1) // 2], [0, 0]])
    x = x[:, : (out_h - 1) * sh + kh, : (out_w - 1) * sw + kw, :]
    grad = tf.nn.conv2d(
        tf.transpose(x, [3, 1, 2, 0]),
        tf.transpose(dy, [1, 2, 0, 3]),
        strides=1,
        padding="VALID",
        dilations=[sh, sw],
    )
    return tf.transpose(grad, [1, 2, 0, 3])


@keras.saving.register_keras_serializable(package="simsiam_tf")
class Conv2D(layers.Conv2D):
    """`keras.layers.Conv2D` with a faster filter gradient on small feature maps on CPU.

    Same weights, arguments and results as the Keras layer. For kernels larger than 1x1
    whose output map has at most `SMALL_MAP_POSITIONS` positions (the last two stages
    of a ResNet at 32 px), the filter gradient can be computed as a forward convolution
    (`_filter_grad_as_conv`) instead of oneDNN's backward-weights kernel; the input
    gradient is the usual one. Dilated or grouped convolutions, unknown shapes and GPUs
    always keep the Keras layer.

    `small_map_grad`: None (default) chooses per compute dtype
    (`small_map_grad_by_default`: on in 16-bit compute, where it measured faster on
    every CPU kind, native or emulated 16-bit; off in float32, where it measured
    slower); True or False forces it on or off for the layers it can apply to. The
    attribute may be changed before the model is traced, e.g. to time one against the
    other.
    """

    def __init__(self, *args, small_map_grad=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.small_map_grad = None if small_map_grad is None else bool(small_map_grad)

    def get_config(self):
        config = super().get_config()
        config["small_map_grad"] = self.small_map_grad
        return config

    def _small_map_grad_applies(self, inputs):
        """The rewrite is valid and worth considering for this layer and input shape."""
        if self.data_format != "channels_last":
            return False
        if tuple(self.dilation_rate) != (1, 1) or self.groups != 1 or max(self.kernel_size) == 1:
            return False
        if inputs.dtype not in (tf.bfloat16, tf.float16, tf.float32):
            return False
        if self.padding == "same" and (tuple(self.strides) != (1, 1) or min(self.kernel_size) % 2 == 0):
            return False
        shape = inputs.shape
        if len(shape) != 4 or None in shape[1:]:
            return False
        out_h = (shape[1] - (0 if self.padding == "same" else self.kernel_size[0] - 1) - 1) // self.strides[0] + 1
        out_w = (shape[2] - (0 if self.padding == "same" else self.kernel_size[1] - 1) - 1) // self.strides[1] + 1
        if out_h * out_w > SMALL_MAP_POSITIONS:
            return False
        return not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))

    def _use_small_map_grad(self, inputs):
        if self.small_map_grad is False or not self._small_map_grad_applies(inputs):
            return False
        if self.small_map_grad is None:
            return small_map_grad_by_default(inputs.dtype.name)
        return True

    def convolution_op(self, inputs, kernel):
        if not self._use_small_map_grad(inputs):
            return super().convolution_op(inputs, kernel)
        strides = tuple(self.strides)
        padding = self.padding.upper()
        kernel_size = tuple(self.kernel_size)
        mode = self.padding
        # A tensor, not the (autocast) variable: the custom gradient is taken with
        # respect to the kernel value, and flows on to the variable from there.
        kernel = tf.cast(tf.convert_to_tensor(kernel), inputs.dtype)

        @tf.custom_gradient
        def conv(x, w):
            y = tf.nn.conv2d(x, w, strides=strides, padding=padding)

            def grad(dy):
                dx = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x),
                    filter=w,
                    out_backprop=dy,
                    strides=[1, *strides, 1],
                    padding=padding,
                )
                dw = _filter_grad_as_conv(x, dy, kernel_size, strides, mode)
                return dx, dw

            return y, grad

        return conv(inputs, kernel)


def _conv_init():
    # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"). A fresh instance
    # per layer: an unseeded Keras initializer returns the same values on every call.
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


def _conv(x, filters, kernel_size, stride, name):
    """Conv without bias, padded as PyTorch's `padding=kernel_size // 2`."""
    pad = kernel_size // 2
    if stride > 1 and pad > 0:
        # Keras "same" pads stride-2 convs asymmetrically (more at the bottom/right);
        # PyTorch pads both sides equally.
        # (A ZeroPadding2D copy + "valid" conv: oneDNN runs convolutions with explicit
        # padding several times slower, backward passes especially.)
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same" if pad > 0 else "valid"
    return Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=_conv_init(),
        name=name,
    )(x)


def _bn(x, name, sync_bn, zero_gamma=False):
    return FusedBatchNormalization(
        momentum=0.9,
        epsilon=1e-5,
        synchronized=sync_bn,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
    )(x)


def _residual_sum(x, out, out_channels, stride, name, sync_bn):
    """ReLU(out + shortcut): x itself, or a strided 1x1 conv + BN where the shape changes."""
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = _conv(x, out_channels, 1, stride, f"{name}_downsample_conv")
        shortcut = _bn(shortcut, f"{name}_downsample_bn", sync_bn)
    out = layers.Add(name=f"{name}_add")([out, shortcut])
    return layers.ReLU(name=f"{name}_out")(out)


def _basic_block(x, planes, stride, name, sync_bn, zero_init_residual):
    out = _conv(x, planes, 3, stride, f"{name}_conv1")
    out = _bn(out, f"{name}_bn1", sync_bn)
    out = layers.ReLU(name=f"{name}_relu1")(out)
    out = _conv(out, planes, 3, 1, f"{name}_conv2")
    out = _bn(out, f"{name}_bn2", sync_bn, zero_gamma=zero_init_residual)
    return _residual_sum(x, out, planes, stride, name, sync_bn)


def _bottleneck_block(x, planes, stride, name, sync_bn, zero_init_residual):
    out = _conv(x, planes, 1, 1, f"{name}_conv1")
    out = _bn(out, f"{name}_bn1", sync_bn)
    out = layers.ReLU(name=f"{name}_relu1")(out)
    out = _conv(out, planes, 3, stride, f"{name}_conv2")
    out = _bn(out, f"{name}_bn2", sync_bn)
    out = layers.ReLU(name=f"{name}_relu2")(out)
    out_channels = planes * EXPANSION["bottleneck"]
    out = _conv(out, out_channels, 1, 1, f"{name}_conv3")
    out = _bn(out, f"{name}_bn3", sync_bn, zero_gamma=zero_init_residual)
    return _residual_sum(x, out, out_channels, stride, name, sync_bn)
