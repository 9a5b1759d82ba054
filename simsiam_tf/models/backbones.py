"""ResNet-18/34/50 encoders as Keras functional models, matching torchvision's ResNet.

The layout, padding and initialisation follow torchvision (ResNet v1.5: the stride of a
bottleneck block sits on its 3x3 conv), so parameter counts and feature maps line up with
the PyTorch reference. The classifier is left out: a backbone maps [0, 1] images (NHWC)
to the global-average-pooled feature vector.
"""

import keras
import tensorflow as tf
from keras import layers

from simsiam_tf.config import backbone_names
from simsiam_tf.config.backbone_names import register_backbone, unregister_backbone  # noqa: F401 (public API)
from simsiam_tf.config.choices import (
    BACKBONE_NAMES,
    BN_CONVENTIONS,
    CIFAR_SUFFIX,
    INPUT_COLOURS,
    KERAS_PREFIX,
    SMALL_BACKBONES,
)
from simsiam_tf.models import keras_backbones, small_backbones
from simsiam_tf.models.layers import (  # noqa: F401 (the layers a backbone is made of, as backbones.X)
    EXPANSION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Conv2D,
    FusedBatchNormalization,
    ImageNormalization,
    _basic_block,
    _bn,
    _bottleneck_block,
    _conv,
    small_map_grad_by_default,
)
from simsiam_tf.training import distribute

# arch -> (block type, blocks per stage), for each of config.BACKBONE_ARCHS (the names are listed there).
_ARCHS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


def parse_backbone_name(name):
    """'resnet50' -> ('resnet50', False); 'resnet18_cifar' -> ('resnet18', True); 'small_vgg' -> ('small_vgg', False).

    A Keras Applications name ('keras:EfficientNetV2B0') or a registered one comes back
    as it is, with False.
    """
    if name in BACKBONE_NAMES:
        if name.endswith(CIFAR_SUFFIX):
            return name[: -len(CIFAR_SUFFIX)], True
        return name, False
    backbone_names.backbone_kind(name)  # ValueError naming the valid spellings
    return name, False


def is_external(name):
    """Whether `name` is a Keras Applications or registered backbone (built at a fixed image size)."""
    return name not in BACKBONE_NAMES and backbone_names.backbone_kind(name) != backbone_names.PACKAGE


def stage_widths(width_multiplier=1.0):
    """Channel widths of the four stages (the stem uses the first)."""
    return [max(8, int(round(64 * width_multiplier * 2**stage))) for stage in range(4)]


def build_backbone(
    arch="resnet18",
    cifar_stem=False,
    width_multiplier=1.0,
    sync_bn="auto",
    zero_init_residual=True,
    input_shape=(None, None, 3),
    name=None,
    weights=None,
    bn_convention="model",
    input_colour="rgb",
):
    """Functional ResNet mapping [0, 1] images [N, H, W, C] to features [N, feat_dim].

    Args:
      arch: "resnet18", "resnet34" or "resnet50".
      cifar_stem: 3x3/1 stem conv without max-pool (small images) instead of the
        ImageNet 7x7/2 conv + 3x3/2 max-pool.
      width_multiplier: scales every channel width (at least 8 channels per stage).
      sync_bn: BatchNormalization synchronised across replicas: True, False, or "auto"
        (on when the strategy in scope when the backbone is built has more than one replica).
      zero_init_residual: the last BN of each residual branch starts with gamma = 0,
        so every block starts as the identity.
      input_shape: per-example shape; None spatial dims accept any image size.
      name: model name; defaults to the arch (with "_cifar" for the CIFAR stem).
      weights: None (random), "imagenet" (Keras Applications only: Keras' cache, else its
        download) or the path of a `.weights.h5` file of the same backbone.
      bn_convention: "model" keeps a backbone's own BatchNorm momentum/epsilon (the
        package's encoders already use the PyTorch reference's); "reference" sets the
        reference's (Keras momentum 0.9, epsilon 1e-5).
      input_colour: "rgb", or "luma": the package's encoders see each image's grayscale
        (ITU-R 601-2) in all three channels (`ImageNormalization(luma=True)`).

    `arch` "small_resnet" or "small_vgg" builds an encoder for 28-64 px images
    (`simsiam_tf.models.small_backbones`; `cifar_stem` does not apply to them).
    Every `--backbone` name is accepted, "resnet18_cifar" included.

    `arch` "keras:NAME" builds a Keras Applications model (`keras_backbones`), and a name
    registered with `register_backbone` the user's model, each at `input_shape`
    (spatial size given), taking the same [0, 1] images; `width_multiplier`,
    `cifar_stem` and `zero_init_residual` apply to the package's encoders only.

    Example:
        ```python
        import simsiam_tf as st

        encoder = st.build_backbone("keras:EfficientNetV2B0", input_shape=(64, 64, 3))
        ```
    """
    if bn_convention not in BN_CONVENTIONS:
        raise ValueError(f"bn_convention must be one of {', '.join(BN_CONVENTIONS)}; got {bn_convention!r}")
    if input_colour not in INPUT_COLOURS:
        raise ValueError(f"input_colour must be one of {', '.join(INPUT_COLOURS)}; got {input_colour!r}")
    if arch not in BACKBONE_NAMES and arch not in _ARCHS:
        if input_colour != "rgb":
            raise ValueError(f"input_colour={input_colour} applies to the package's encoders, not {arch!r}")
        return _external_backbone(arch, input_shape, weights, sync_bn, bn_convention, name)
    if arch in BACKBONE_NAMES and arch.endswith(CIFAR_SUFFIX):  # the --backbone spelling, e.g. "resnet18_cifar"
        name = name or arch
        arch, cifar_stem = parse_backbone_name(arch)
    encoder = _package_backbone(
        arch, cifar_stem, width_multiplier, sync_bn, zero_init_residual, input_shape, name, input_colour == "luma"
    )
    if weights not in (None, "none"):
        if weights == "imagenet":
            raise ValueError(f"ImageNet weights exist for Keras Applications backbones ({KERAS_PREFIX}NAME) only")
        keras_backbones.load_backbone_weights(encoder, weights)
    return encoder


def _external_backbone(name, input_shape, weights, sync_bn, bn_convention, model_name):
    kind = backbone_names.backbone_kind(name)
    if None in tuple(input_shape)[:2]:
        raise ValueError(f"backbone {name!r} is built at one image size: give input_shape=(size, size, 3)")
    sync_bn = distribute.resolve_sync_bn(sync_bn, tf.distribute.get_strategy())
    if kind == backbone_names.KERAS:
        return keras_backbones.build_keras_backbone(
            name[len(KERAS_PREFIX) :], input_shape, weights, sync_bn, bn_convention, model_name
        )
    if weights == "imagenet":
        raise ValueError(f"ImageNet weights exist for Keras Applications backbones ({KERAS_PREFIX}NAME) only")
    model = backbone_names.registered_builder(name)(input_shape=tuple(input_shape))
    encoder = keras_backbones.wrap_registered(model, name, sync_bn, bn_convention)
    feature_dim(encoder)  # ValueError unless it maps images to [N, D]
    if weights not in (None, "none"):
        keras_backbones.load_backbone_weights(encoder, weights)
    return encoder


def _package_backbone(arch, cifar_stem, width_multiplier, sync_bn, zero_init_residual, input_shape, name, luma):
    if arch in SMALL_BACKBONES:
        return small_backbones.build_small_backbone(
            arch,
            width_multiplier=width_multiplier,
            sync_bn=distribute.resolve_sync_bn(sync_bn, tf.distribute.get_strategy()),
            zero_init_residual=zero_init_residual,
            input_shape=input_shape,
            name=name,
            luma=luma,
        )
    if arch not in _ARCHS:
        raise ValueError(f"Unknown arch {arch!r}; valid: {', '.join(sorted(_ARCHS))}")
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
    sync_bn = distribute.resolve_sync_bn(sync_bn, tf.distribute.get_strategy())
    block_type, depths = _ARCHS[arch]
    block_fn = _basic_block if block_type == "basic" else _bottleneck_block
    widths = stage_widths(width_multiplier)
    if name is None:
        name = arch + (CIFAR_SUFFIX if cifar_stem else "")

    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = ImageNormalization(luma=luma, name="normalize")(inputs)
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

    Args:
        name: a backbone name; the "_cifar" suffix selects the CIFAR stem.
        **kwargs: passed on to `build_backbone` (width_multiplier, sync_bn, ...).

    Returns:
        The backbone, a functional `keras.Model`.
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
