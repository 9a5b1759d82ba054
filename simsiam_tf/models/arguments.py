"""Model configs stored under each constructor argument's name, written once for every model of the package.

`get_config` adds to Keras' base config one entry per argument of the class's
constructor, read from the attribute of the same name (so every model keeps each
argument, as it resolved it, under that name); Keras objects (a backbone, an encoder)
are serialised and Keras variables (a calibrated threshold) stored as their value.
`from_config` passes the entries back to the constructor, deserialising the Keras
objects. A `.keras` file and `from_config(get_config())` therefore rebuild the model
that was saved.
"""

import inspect

import keras

_ARGUMENT_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def argument_names(cls):
    """The names of `cls`'s constructor arguments, `self` and `**kwargs` left out."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.kind in _ARGUMENT_KINDS]


def _config_value(value):
    if isinstance(value, (keras.layers.Layer, keras.Model)):
        return keras.saving.serialize_keras_object(value)
    if isinstance(value, keras.Variable):
        return keras.ops.convert_to_numpy(value).item()
    return value


def _is_serialised_object(value):
    return isinstance(value, dict) and "class_name" in value and "config" in value


class ArgumentConfig:
    """Mixin for a `keras.Model` subclass: `get_config`/`from_config` from its constructor's arguments."""

    def get_config(self):
        config = super().get_config()
        for name in argument_names(type(self)):
            config[name] = _config_value(getattr(self, name))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in argument_names(cls):
            if _is_serialised_object(config.get(name)):
                config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)
