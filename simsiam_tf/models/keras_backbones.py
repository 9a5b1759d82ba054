"""Keras Applications models and user-registered models as SimSiam encoders.

`build_keras_backbone("EfficientNetV2B0", (32, 32, 3))` is the application without its
top, with global average pooling, wrapped so that it takes the package's [0, 1] images:
an `ApplicationInput` layer in front gives each family the input range it was trained
on (some families scale and normalise inside the model and want [0, 255]; the others
want `preprocess_input`'s "tf", "torch" or "caffe" range). `configure_batchnorm` makes
the BatchNorm layers of any model follow the run's sync_bn and BatchNorm convention.
Initial weights: random, ImageNet (Keras' own download and cache) or a `.weights.h5`
file of the backbone (`load_backbone_weights`, which names the shapes that differ).
"""

import contextlib
import inspect
import os

import h5py
import keras
import numpy as np
from keras import layers, ops

from simsiam_tf.config import choices as c
from simsiam_tf.errors import RunError
from simsiam_tf.models.layers import IMAGENET_MEAN, IMAGENET_STD

# How each family wants its input (the `preprocess_input` of its Keras module):
# PIXELS: [0, 255], the model rescales and normalises inside (include_preprocessing);
# "tf": [-1, 1]; "torch": ImageNet mean/std of [0, 1]; "caffe": BGR [0, 255] minus the ImageNet mean.
PIXELS = "pixels"
INPUT_MODES = (PIXELS, "tf", "torch", "caffe")
FAMILY_INPUT = {
    "convnext": PIXELS,
    "efficientnet": PIXELS,
    "efficientnet_v2": PIXELS,
    "mobilenet_v3": PIXELS,
    "densenet": "torch",
    "resnet": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet_v2": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "nasnet": "tf",
}
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# The PyTorch reference's BatchNorm: momentum 0.1 (Keras' 0.9), epsilon 1e-5.
REFERENCE_BN = dict(momentum=0.9, epsilon=1e-5)


@keras.saving.register_keras_serializable(package="simsiam_tf")
class ApplicationInput(layers.Layer):
    """[0, 1] images -> the input range of a Keras Applications family (`INPUT_MODES`); holds no weights."""

    def __init__(self, mode=PIXELS, **kwargs):
        super().__init__(**kwargs)
        if mode not in INPUT_MODES:
            raise ValueError(f"mode must be one of {', '.join(INPUT_MODES)}; got {mode!r}")
        self.mode = mode

    def call(self, x):
        if self.mode == PIXELS:
            return x * 255.0
        if self.mode == "tf":
            return x * 2.0 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(IMAGENET_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(IMAGENET_STD, dtype=x.dtype)
            return (x - mean) / std
        mean = ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=x.dtype)
        return ops.flip(x, axis=-1) * 255.0 - mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def application(name):
    """The `keras.applications` constructor of `name` ("EfficientNetV2B0") and its input mode."""
    if name not in c.KERAS_APPLICATIONS or not hasattr(keras.applications, name):
        raise ValueError(f"unknown Keras Applications model {name!r}; choose one of {', '.join(c.KERAS_APPLICATIONS)}")
    constructor = getattr(keras.applications, name)
    return constructor, FAMILY_INPUT[constructor.__module__.rsplit(".", 1)[-1]]


def batchnorm_layers(model):
    """Every BatchNormalization layer of `model`, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(batchnorm_layers(layer))
    return found


def configure_batchnorm(model, sync_bn=False, bn_convention="model"):
    """Sets each BatchNorm layer of `model` (before it is traced) to synchronise across replicas or not, and
    with bn_convention="reference" to the PyTorch reference's momentum/epsilon. Returns `model`.

    The layers read these attributes when called, and their configs record them, so a
    `.keras` file of the model rebuilds the same layers.
    """
    if bn_convention not in c.BN_CONVENTIONS:
        raise ValueError(f"bn_convention must be one of {', '.join(c.BN_CONVENTIONS)}; got {bn_convention!r}")
    for layer in batchnorm_layers(model):
        layer.synchronized = bool(sync_bn)
        if bn_convention == "reference":
            layer.momentum, layer.epsilon = REFERENCE_BN["momentum"], REFERENCE_BN["epsilon"]
    return model


@contextlib.contextmanager
def _naming_failed_downloads(what):
    """Turns a failed download of Keras' `get_file` into a RunError naming the file Keras looked for."""
    from keras.src.utils import file_utils

    original = file_utils.get_file
    signature = inspect.signature(original)

    def get_file(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except Exception as err:
            call = signature.bind(*args, **kwargs)
            call.apply_defaults()
            raise RunError(_download_message(what, call.arguments, err)) from err

    file_utils.get_file = get_file
    try:
        yield
    finally:
        file_utils.get_file = original


def _download_message(what, arguments, err):
    origin = arguments["origin"]
    fname = arguments["fname"] or os.path.basename(origin)
    from keras.src.backend import config as keras_config  # where get_file keeps its cache

    cache_dir = os.path.expanduser(arguments["cache_dir"] or keras_config.keras_home())
    if not os.access(cache_dir, os.W_OK):
        cache_dir = os.path.join("/tmp", ".keras")  # where Keras falls back to when its home is read-only
    target = os.path.join(cache_dir, arguments["cache_subdir"], fname)
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"cannot get the ImageNet weights of {what}: Keras looked for {target} and could not download it from "
        f"{origin} ({reason}). On a machine with network, download that file and copy it to {target} (Keras' "
        "cache; set KERAS_HOME to move it), or use --backbone_weights=none or a .weights.h5 file"
    )


def build_keras_backbone(
    name, input_shape, weights=None, sync_bn=False, bn_convention="model", model_name=None, **application_kwargs
):
    """A Keras Applications model as an encoder: [0, 1] images `input_shape` -> pooled features `[N, D]` (float32).

    Args:
      name: the application, e.g. "MobileNetV3Small" (one of `config.KERAS_APPLICATIONS`).
      input_shape: (image_size, image_size, 3).
      weights: None (random), "imagenet" (Keras' cache, else its download; a RunError
        naming the file when neither works) or the path of a `.weights.h5` file of this encoder.
      sync_bn: synchronise the BatchNorm layers across replicas (`configure_batchnorm`).
      bn_convention: "model" (the application's own momentum/epsilon) or "reference".
      model_name: the encoder's name; default "keras_<name>".
      **application_kwargs: passed to the application (e.g. alpha for the MobileNets).
    """
    constructor, mode = application(name)
    if weights not in (None, "none", "imagenet") and not str(weights).endswith(c.WEIGHTS_SUFFIX):
        raise ValueError(f"weights must be None, 'imagenet' or a {c.WEIGHTS_SUFFIX} path; got {weights!r}")
    input_shape = tuple(input_shape)
    with _naming_failed_downloads(f"{c.KERAS_PREFIX}{name}"):
        net = constructor(
            include_top=False,
            weights="imagenet" if weights == "imagenet" else None,
            input_shape=input_shape,
            pooling="avg",
            **application_kwargs,
        )
    inputs = keras.Input(shape=input_shape, name="images")
    x = ApplicationInput(mode, name="preprocess")(inputs)
    x = net(x)
    outputs = layers.Activation("linear", dtype="float32", name="features")(x)
    encoder = keras.Model(inputs, outputs, name=model_name or f"keras_{name}")
    configure_batchnorm(encoder, sync_bn, bn_convention)
    if weights not in (None, "none", "imagenet"):
        load_backbone_weights(encoder, weights)
    return encoder


def wrap_registered(model, builder_name, sync_bn=False, bn_convention="model"):
    """A registered builder's model, checked to be a keras.Model, with its BatchNorm configured."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"the builder of backbone {builder_name!r} returned {type(model).__name__}, not a keras.Model")
    return configure_batchnorm(model, sync_bn, bn_convention)


def _file_arrays(path):
    """[(name, shape)] of the model's arrays in a Keras `.weights.h5` file (not the optimizer's, nor metrics')."""
    found = []

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and name.startswith(("layers/", "vars/")):
            found.append((name, tuple(item.shape)))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


def _shape_counts(shapes):
    counts = {}
    for shape in shapes:
        counts[shape] = counts.get(shape, 0) + 1
    return counts


def _surplus(a, b):
    """The shapes `a` holds more often than `b`, each repeated by the difference."""
    out = []
    for shape, n in sorted(a.items(), key=lambda item: (len(item[0]), item[0])):
        out.extend([shape] * (n - b.get(shape, 0)))
    return out


def load_backbone_weights(encoder, path):
    """Loads a `.weights.h5` file of a backbone (`encoder.save_weights(path)`) into `encoder`.

    Refuses, with a RunError naming the shapes that differ, a file written for another
    architecture or size; nothing is loaded then.
    """
    path = os.fspath(path)
    if not str(path).endswith(c.WEIGHTS_SUFFIX):
        raise RunError(f"backbone weights must be a {c.WEIGHTS_SUFFIX} file (encoder.save_weights(path)); got {path!r}")
    if not os.path.isfile(path):
        raise RunError(f"backbone weights file {path!r} does not exist")
    try:
        stored = _shape_counts(shape for _, shape in _file_arrays(path))
    except OSError as err:
        raise RunError(f"cannot read the backbone weights file {path!r}: {err}") from None
    wanted = _shape_counts(tuple(w.shape) for w in encoder.weights)
    if stored != wanted:
        only_file, only_model = _surplus(stored, wanted), _surplus(wanted, stored)
        raise RunError(
            f"the weights in {path!r} do not fit backbone {encoder.name!r}: the file holds "
            f"{sum(stored.values())} arrays, the backbone {sum(wanted.values())}; shapes only in the file: "
            f"{_shape_list(only_file)}; only in the backbone: {_shape_list(only_model)}. Give the weights of the "
            "same --backbone (and --width_multiplier) as this run"
        )
    before = [np.array(w) for w in encoder.weights]
    try:
        encoder.load_weights(path)
    except ValueError as err:
        for w, value in zip(encoder.weights, before):
            w.assign(value)
        first = str(err).strip().splitlines()
        raise RunError(
            f"the weights in {path!r} do not fit backbone {encoder.name!r}: {first[0] if first else err}"
        ) from None
    return encoder


def _shape_list(shapes, most=8):
    """ "(3, 3, 3, 16), (16,) x4" for the shapes (in order, repeats counted), the first `most` distinct ones."""
    counts = _shape_counts(shapes)
    items = [f"{shape}" + (f" x{n}" if n > 1 else "") for shape, n in counts.items()]
    text = ", ".join(items[:most])
    return (text + f", ... ({len(items)} distinct shapes)") if len(items) > most else (text or "none")
