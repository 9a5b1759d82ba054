"""ResNet-18/34/50 encoders as Keras functional models, matching torchvision's ResNet.

The layout, padding and initialisation follow torchvision (ResNet v1.5: the stride of a
bottleneck block sits on its 3x3 conv), so parameter counts and feature maps line up with
the PyTorch reference. The classifier is left out: a backbone maps [0, 1] images (NHWC)
to the global-average-pooled feature vector.
"""
import keras
from keras import layers, ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# arch -> (block type, blocks per stage)
_ARCHS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}
_EXPANSION = {"basic": 1, "bottleneck": 4}
_CIFAR_SUFFIX = "_cifar"

BACKBONE_NAMES = tuple(sorted(list(_ARCHS) + [a + _CIFAR_SUFFIX for a in _ARCHS]))


@keras.saving.register_keras_serializable(package="simsiam_tf")
class ImageNormalization(layers.Layer):
    """(x - mean) / std per channel with constant statistics; holds no weights."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std differ in length: {self.mean} vs {self.std}")

    def call(self, x):
        mean = ops.convert_to_tensor(self.mean, dtype=x.dtype)
        std = ops.convert_to_tensor(self.std, dtype=x.dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=list(self.mean), std=list(self.std))
        return config


def parse_backbone_name(name):
    """'resnet50' -> ('resnet50', False); 'resnet18_cifar' -> ('resnet18', True)."""
    if name in BACKBONE_NAMES:
        if name.endswith(_CIFAR_SUFFIX):
            return name[: -len(_CIFAR_SUFFIX)], True
        return name, False
    raise ValueError(f"Unknown backbone {name!r}; valid names: {', '.join(BACKBONE_NAMES)}")


def stage_widths(width_multiplier=1.0):
    """Channel widths of the four stages (the stem uses the first)."""
    return [max(8, int(round(64 * width_multiplier * 2**stage))) for stage in range(4)]


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
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same" if pad > 0 else "valid"
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=_conv_init(),
        name=name,
    )(x)


def _bn(x, name, sync_bn, zero_gamma=False):
    return layers.BatchNormalization(
        momentum=0.9,
        epsilon=1e-5,
        synchronized=sync_bn,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
    )(x)


def _basic_block(x, planes, stride, name, sync_bn, zero_init_residual):
    in_channels = x.shape[-1]
    out = _conv(x, planes, 3, stride, f"{name}_conv1")
    out = _bn(out, f"{name}_bn1", sync_bn)
    out = layers.ReLU(name=f"{name}_relu1")(out)
    out = _conv(out, planes, 3, 1, f"{name}_conv2")
    out = _bn(out, f"{name}_bn2", sync_bn, zero_gamma=zero_init_residual)
    shortcut = x
    if stride != 1 or in_channels != planes:
        shortcut = _conv(x, planes, 1, stride, f"{name}_downsample_conv")
        shortcut = _bn(shortcut, f"{name}_downsample_bn", sync_bn)
    out = layers.Add(name=f"{name}_add")([out, shortcut])
    return layers.ReLU(name=f"{name}_out")(out)


def _bottleneck_block(x, planes, stride, name, sync_bn, zero_init_residual):
    in_channels = x.shape[-1]
    out_channels = planes * _EXPANSION["bottleneck"]
    out = _conv(x, planes, 1, 1, f"{name}_conv1")
    out = _bn(out, f"{name}_bn1", sync_bn)
    out = layers.ReLU(name=f"{name}_relu1")(out)
    out = _conv(out, planes, 3, stride, f"{name}_conv2")
    out = _bn(out, f"{name}_bn2", sync_bn)
    out = layers.ReLU(name=f"{name}_relu2")(out)
    out = _conv(out, out_channels, 1, 1, f"{name}_conv3")
    out = _bn(out, f"{name}_bn3", sync_bn, zero_gamma=zero_init_residual)
    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = _conv(x, out_channels, 1, stride, f"{name}_downsample_conv")
        shortcut = _bn(shortcut, f"{name}_downsample_bn", sync_bn)
    out = layers.Add(name=f"{name}_add")([out, shortcut])
    return layers.ReLU(name=f"{name}_out")(out)


def build_backbone(
    arch="resnet18",
    cifar_stem=False,
    width_multiplier=1.0,
    sync_bn=False,
    zero_init_residual=True,
    input_shape=(None, None, 3),
    name=None,
):
    """Functional ResNet mapping [0, 1] images [N, H, W, C] to features [N, feat_dim].

    Args:
      arch: "resnet18", "resnet34" or "resnet50".
      cifar_stem: 3x3/1 stem conv without max-pool (small images) instead of the
        ImageNet 7x7/2 conv + 3x3/2 max-pool.
      width_multiplier: scales every channel width (at least 8 channels per stage).
      sync_bn: BatchNormalization synchronised across replicas.
      zero_init_residual: the last BN of each residual branch starts with gamma = 0,
        so every block starts as the identity.
      input_shape: per-example shape; None spatial dims accept any image size.
      name: model name; defaults to the arch (with "_cifar" for the CIFAR stem).
    """
    if arch not in _ARCHS:
        raise ValueError(f"Unknown arch {arch!r}; valid: {', '.join(sorted(_ARCHS))}")
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
    block_type, depths = _ARCHS[arch]
    block_fn = _basic_block if block_type == "basic" else _bottleneck_block
    widths = stage_widths(width_multiplier)
    if name is None:
        name = arch + (_CIFAR_SUFFIX if cifar_stem else "")

    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = ImageNormalization(name="normalize")(inputs)
    if cifar_stem:
        x = _conv(x, widths[0], 3, 1, "stem_conv")
        x = _bn(x, "stem_bn", sync_bn)
        x = layers.ReLU(name="stem_relu")(x)
    else:
        x = _conv(x, widths[0], 7, 2, "stem_conv")
        x = _bn(x, "stem_bn", sync_bn)
        x = layers.ReLU(name="stem_relu")(x)
        # Zero padding equals PyTorch's -inf padding here: the input is post-ReLU (>= 0).
        x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)

    for stage, (planes, depth) in enumerate(zip(widths, depths)):
        for block in range(depth):
            stride = 2 if stage > 0 and block == 0 else 1
            x = block_fn(
                x,
                planes,
                stride,
                name=f"layer{stage + 1}_{block}",
                sync_bn=sync_bn,
                zero_init_residual=zero_init_residual,
            )

    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    # Features leave the model in float32 whatever the compute dtype.
    outputs = layers.Activation("linear", dtype="float32", name="features")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet(name="resnet18", **kwargs):
    """Backbone by name: "resnet18", "resnet34", "resnet50", each optionally "_cifar".

    Remaining keyword arguments go to `build_backbone`.
    """
    arch, cifar_stem = parse_backbone_name(name)
    kwargs.setdefault("name", name)
    return build_backbone(arch, cifar_stem=cifar_stem, **kwargs)


def feature_dim(backbone):
    """Width of the feature vector a backbone model returns.

    Works for functional and Sequential models, and for subclassed models once built
    (called on a batch).
    """
    try:
        shape = backbone.output_shape
    except (AttributeError, ValueError, RuntimeError):
        build_config = backbone.get_build_config() if backbone.built else None
        input_shape = (build_config or {}).get("input_shape")
        if input_shape is None:
            raise ValueError(
                f"Cannot tell the feature width of backbone {backbone.name!r}: pass a "
                "functional or Sequential model, or call the model on a batch first."
            ) from None
        shape = backbone.compute_output_spec(keras.KerasTensor(tuple(input_shape))).shape
    if isinstance(shape, list):
        if len(shape) != 1:
            raise ValueError(f"Backbone {backbone.name!r} has {len(shape)} outputs; expected 1.")
        shape = shape[0]
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(f"Backbone {backbone.name!r} must output [N, feat_dim]; got {shape}.")
    return int(shape[-1])
