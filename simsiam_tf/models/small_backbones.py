"""Encoders for 28-64 px images: three stages, two downsamplings, features from the last.

A CIFAR ResNet-18 halves a 28 px image three times (to 4 px) through eight blocks; at
the widths a CPU can afford for it (a quarter), its feature vector is 128 wide. These
keep more resolution for fewer layers: a 3x3 stem at full resolution, then three
stages at 1, 1/2 and 1/4 of the input (28 -> 14 -> 7), widths `w`, `2w`, `4w` with
`w = 64 x width_multiplier`, global average pooling. Features: `4w` wide.

- `small_resnet`: one basic residual block (two 3x3 convs, torchvision's layout) per
  stage, the stride on the block's first conv, a 1x1 projection shortcut where the
  shape changes.
- `small_vgg`: two 3x3 conv-BN-ReLU per stage, a 2x2 max-pool between stages.

They take the same [0, 1] NHWC images, normalisation and initialisation as
`simsiam_tf.models.backbones.build_backbone`, which builds them by name.
"""

import keras
from keras import layers

from simsiam_tf.models import layers as blocks

STAGES = 3
SMALL_ARCHS = ("small_resnet", "small_vgg")


def stage_widths(width_multiplier=1.0):
    """Channel widths of the three stages (the stem uses the first)."""
    return [max(8, int(round(64 * width_multiplier * 2**stage))) for stage in range(STAGES)]


def _conv_bn_relu(x, filters, name, sync_bn):
    x = blocks._conv(x, filters, 3, 1, f"{name}_conv")
    x = blocks._bn(x, f"{name}_bn", sync_bn)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_small_backbone(
    arch, width_multiplier=1.0, sync_bn=False, zero_init_residual=True, input_shape=None, name=None, luma=False
):
    """Functional model `[N, H, W, C]` in [0, 1] -> features `[N, 4w]` for `arch` in `SMALL_ARCHS`.

    `luma`: the encoder sees each image's grayscale (`layers.ImageNormalization`)."""
    if arch not in SMALL_ARCHS:
        raise ValueError(f"Unknown small backbone {arch!r}; valid: {', '.join(SMALL_ARCHS)}")
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
    widths = stage_widths(width_multiplier)
    inputs = keras.Input(shape=tuple(input_shape or (None, None, 3)), name="images")
    x = blocks.ImageNormalization(luma=luma, name="normalize")(inputs)
    x = _conv_bn_relu(x, widths[0], "stem", sync_bn)
    for stage, planes in enumerate(widths):
        if arch == "small_resnet":
            x = blocks._basic_block(
                x,
                planes,
                1 if stage == 0 else 2,
                name=f"layer{stage + 1}_0",
                sync_bn=sync_bn,
                zero_init_residual=zero_init_residual,
            )
        else:
            if stage > 0:
                x = layers.MaxPooling2D(2, name=f"layer{stage + 1}_pool")(x)
            x = _conv_bn_relu(x, planes, f"layer{stage + 1}_0", sync_bn)
            x = _conv_bn_relu(x, planes, f"layer{stage + 1}_1", sync_bn)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Activation("linear", dtype="float32", name="features")(x)
    return keras.Model(inputs, outputs, name=name or arch)
