"""Which names `--backbone` takes: the package's encoders, `keras:<Application>`, and user-registered builders.

A registered builder is a function `builder(input_shape) -> keras.Model` mapping [0, 1]
images `[N, H, W, 3]` to features `[N, D]`. It is registered from Python with
`register_backbone(name, builder)`, or, so that every command-line tool finds it
without a line of Python, declared by the user's package as an entry point of the
group `simsiam_tf.backbones` (`name = package.module:builder`).
"""

import importlib.metadata

from simsiam_tf.config import choices as c

ENTRY_POINT_GROUP = "simsiam_tf.backbones"
PACKAGE, KERAS, REGISTERED = "package", "keras", "registered"

_REGISTERED = {}


def register_backbone(name, builder, overwrite=False):
    """Makes `name` a backbone every tool can build (`--backbone=NAME`, `build_backbone(NAME)`).

    Args:
        name: the spelling; not one of the package's names, without ":".
        builder: `builder(input_shape) -> keras.Model` from [0, 1] images [N, H, W, 3] to
            features [N, D]; `input_shape` is `(image_size, image_size, 3)`. It is called
            for every rebuild (linear probe, verification, export), so it must build the
            same architecture each time.
        overwrite: replace a builder registered earlier under `name`.

    Example:
        ```python
        import keras
        import simsiam_tf as st

        def tiny_cnn(input_shape):
            inputs = keras.Input(input_shape)
            x = keras.layers.Conv2D(32, 3, strides=2, use_bias=False)(inputs)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU()(x)
            return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))

        st.register_backbone("tiny_cnn", tiny_cnn)
        encoder = st.build_backbone("tiny_cnn", input_shape=(32, 32, 3))
        ```
    """
    if not isinstance(name, str) or not name or ":" in name or name in c.BACKBONE_NAMES:
        raise ValueError(
            f"cannot register a backbone as {name!r}: give a non-empty name without ':' that is not one of the "
            f"package's ({', '.join(c.BACKBONE_NAMES)})"
        )
    if not callable(builder):
        raise TypeError(f"the builder of backbone {name!r} must be callable, got {type(builder).__name__}")
    if name in _REGISTERED and _REGISTERED[name] is not builder and not overwrite:
        raise ValueError(f"a backbone {name!r} is registered already: pass overwrite=True to replace it")
    _REGISTERED[name] = builder
    return builder


def unregister_backbone(name):
    """Forgets a backbone registered with `register_backbone` (no error when there is none)."""
    _REGISTERED.pop(name, None)


def registered_builder(name):
    """The builder registered as `name` (from Python first, then the entry points), or None."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            return entry.load()
    return None


def backbone_kind(name):
    """PACKAGE, KERAS or REGISTERED; ValueError naming the valid spellings for any other name."""
    if name in c.BACKBONE_NAMES:
        return PACKAGE
    if name.startswith(c.KERAS_PREFIX):
        application = name[len(c.KERAS_PREFIX) :]
        if application not in c.KERAS_APPLICATIONS:
            raise ValueError(
                f"unknown Keras Applications model {application!r} in backbone {name!r}; choose one of "
                f"{', '.join(c.KERAS_APPLICATIONS)} (spelled {c.KERAS_PREFIX}NAME, e.g. {c.KERAS_PREFIX}ResNet50)"
            )
        return KERAS
    if ":" not in name and registered_builder(name) is not None:
        return REGISTERED
    raise ValueError(
        f"unknown backbone {name!r}; choose one of {', '.join(c.BACKBONE_NAMES)}, {c.KERAS_PREFIX}NAME for a "
        "Keras Applications model (e.g. keras:EfficientNetV2B0), or a name registered with "
        f"simsiam_tf.register_backbone (or an entry point of the group {ENTRY_POINT_GROUP})"
    )


def check_backbone(name):
    backbone_kind(name)
    return name


def check_backbone_weights(value):
    if value in c.BACKBONE_WEIGHTS or value.endswith(c.WEIGHTS_SUFFIX):
        return value
    raise ValueError(
        f"backbone_weights must be {' or '.join(c.BACKBONE_WEIGHTS)}, or the path of a {c.WEIGHTS_SUFFIX} file "
        f"of the backbone; got {value!r}"
    )
