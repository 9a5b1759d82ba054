"""The serving model and its writers: SavedModel and `.keras`, with the preprocessing in the graph.

A SavedModel written here needs nothing but TensorFlow to serve (`tf.saved_model.load`,
TF Serving): callers send raw images and get named outputs back, e.g.

  loaded = tf.saved_model.load("<run>/export/saved_model")
  features = loaded.signatures["embed"](images=uint8_batch)["embedding"]

Signatures. Each takes uint8 images in [0, 255]; its `_float` twin (`embed_float`,
`project_float`, ...) takes float32 images in [0, 1]:

  serving_default, embed   images -> {"embedding": float32 [N, feat_dim]} (backbone features)
  project                  images -> {"projection": float32 [N, dim]} (pretraining runs)
  classify                 images -> {"logits", "probabilities": float32 [N, classes],
                                      "top5": int32 [N, min(5, classes)] class ids, best first}
  verify                   images1, images2 -> {"score": float32 [N], "same": bool [N]}
                           (same = score >= the calibrated threshold stored in the model)

Images are [batch, height, width, 3] with any batch size, height and width; grayscale
[batch, height, width, 1] is repeated to three channels. In the graph they are resized
(and, for ImageNet-size models, centre-cropped) exactly as the training job's
evaluation preprocessing `augment.eval_preprocess`; the backbone then normalises with
the ImageNet mean and std. Another rank or channel count fails with an
InvalidArgumentError whose message starts "images must be [batch, height, width, 3]";
an empty batch (or an image of 0 pixels) and images of more than 50 million pixels each
(`export_saved_model(max_image_pixels=...)`) fail with one that names the rule; another
dtype than the signature's (uint8, or float32 for `_float`) is refused by TensorFlow
before the graph runs; float images outside [0, 1] (0-255 values sent to a `_float` signature) fail with one
that says to divide by 255 or to use the uint8 signature.

`model.keras` holds the same model (`ServingModel`) for Keras users: `model(images)`
returns the dict of `embed` plus `project` or `classify`, `model.verify(images1,
images2)` that of `verify`, with the same input rules. Load it with `keras.saving.load_model`
once `simsiam_tf.serving` is imported (it registers the package's Keras classes), or
with `load_keras_model`.
"""

import contextlib
import logging as py_logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging as absl_logging

from simsiam_tf import augment

# Registers PairVerifier, which a verify run's model.keras refers to.
from simsiam_tf.models import verifier as verifier_lib  # noqa: F401

SAVED_MODEL_NAME = "saved_model"
KERAS_NAME = "model.keras"
# The encoder's weights alone (`encoder.save_weights`): what --init_from and --backbone_weights take.
ENCODER_WEIGHTS_NAME = "encoder.weights.h5"
IMAGES_MESSAGE = "images must be [batch, height, width, 3] (RGB) or [batch, height, width, 1] (grayscale)"
FLOAT_RANGE_MESSAGE = (
    "images of a _float signature must lie in [0, 1]: divide 0-255 images by 255, or send them as uint8 to "
    "the signature without _float (use embed for uint8 images, not embed_float)"
)
FLOAT_RANGE_TOLERANCE = 1e-4  # rounding of a division by 255
EMPTY_MESSAGE = "images must hold at least one image of at least 1 x 1 pixels; got an empty batch of shape"
LARGE_MESSAGE = (
    "{name} must have at most {max_pixels} pixels each (height x width): resize them before sending, or export "
    "with a larger max_image_pixels; got shape"
)
# The largest image (height x width) the signatures take: its float32 copy in the graph is 600 MB.
SERVING_MAX_IMAGE_PIXELS = 50_000_000


# --------------------------------------------------------------------------- graph pieces


def check_images(images, name="images", max_pixels=None):
    """Raw serving images -> [N, H, W, 3] with the same dtype; grayscale repeated to RGB.

    A tensor of another rank or channel count, an empty batch (N, H or W of 0), or,
    with `max_pixels`, images of more than `max_pixels` pixels each (H x W) fail at
    run time with an InvalidArgumentError that names the rule and the shape received.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    # When a caller's input shape is known, Grappler specialises the graph to it and
    # reports the first op whose shape rule fails, before any assert has run. So no op
    # here may index a dimension that a bad input lacks: a bad input is reshaped to
    # [size, 1, 1, 1] instead, and the asserts below are the only errors it meets.
    dims = tf.concat([shape, tf.zeros([4], shape.dtype)], 0)[:4]
    channels = dims[3]
    ok = tf.logical_and(tf.equal(tf.size(shape), 4), tf.logical_or(tf.equal(channels, 3), tf.equal(channels, 1)))
    message = IMAGES_MESSAGE.replace("images", name, 1)
    checks = [tf.debugging.Assert(ok, [message, "got shape", shape], summarize=8)]
    # Each rule is checked after the one before, so that the error names the first broken rule.
    with tf.control_dependencies(checks):
        empty = tf.logical_and(ok, tf.reduce_any(tf.equal(dims[:3], 0)))
        checks.append(tf.debugging.Assert(~empty, [EMPTY_MESSAGE.replace("images", name, 1), shape], summarize=8))
    if max_pixels is not None:
        with tf.control_dependencies(checks[-1:]):
            pixels = tf.cast(dims[1], tf.int64) * tf.cast(dims[2], tf.int64)
            large = tf.logical_and(ok, pixels > int(max_pixels))
            text = LARGE_MESSAGE.format(name=name, max_pixels=int(max_pixels))
            checks.append(tf.debugging.Assert(~large, [text, shape], summarize=8))
    with tf.control_dependencies(checks):
        flat = tf.reshape(images, [-1])
    fallback = tf.stack([tf.size(images, out_type=shape.dtype), 1, 1, 1])
    images = tf.reshape(flat, tf.where(ok, dims, fallback))
    images = tf.tile(images, tf.stack([1, 1, 1, 3 // tf.where(ok, channels, 1)]))
    images.set_shape([None, None, None, 3])
    return images


def check_float_range(images, name="images"):
    """Float images unchanged when every value lies in [0, 1]; else an InvalidArgumentError at run time.

    0-255 floats would otherwise be taken silently (features of a washed-out image).
    """
    if not images.dtype.is_floating:
        return images
    values = tf.cast(images, tf.float32)
    low, high = tf.reduce_min(values), tf.reduce_max(values)
    ok = tf.logical_and(low >= 0.0, high <= 1.0 + FLOAT_RANGE_TOLERANCE)
    message = FLOAT_RANGE_MESSAGE.replace("images", name, 1)
    valid = tf.debugging.Assert(ok, [message, "got min", low, "max", high])
    with tf.control_dependencies([valid]):
        return tf.identity(images)


def prepare_images(images, image_size, center_crop, name="images", max_pixels=None):
    """Raw images (uint8 or float [0, 1]) -> the model's input: float32 [N, image_size, image_size, 3]."""
    images = check_float_range(check_images(images, name, max_pixels), name)
    return augment.eval_preprocess(images, image_size, center_crop)


def _float32(x):
    return tf.cast(x, tf.float32)


@keras.saving.register_keras_serializable(package="simsiam_tf")
class ServingModel(keras.Model):
    """A trained encoder and its head behind the serving preprocessing: what export writes.

    `model(images)` takes raw images (uint8 [0, 255] or float [0, 1]; [N, H, W, 3] or
    [N, H, W, 1]; any size) and returns a dict: "embedding" (backbone features), plus
    "projection" with a projector, "logits"/"probabilities"/"top5" with a classifier.
    `model.verify(images1, images2)` returns {"score", "same"} with a verifier. All in
    inference mode; float outputs are float32.

    Args:
      encoder: Keras model, [0, 1] images [N, S, S, 3] -> features [N, feat_dim].
      image_size: side of the images the encoder takes, as the run's evaluation
        preprocessing (`augment.eval_preprocess(images, image_size, center_crop)`).
      center_crop: resize and centre-crop (ImageNet protocol) instead of a plain resize.
      projector: Keras model, features -> projection.
      classifier: Keras layer or model, features -> logits (e.g. `LinearProbe.classifier`).
      verifier: a `PairVerifier` (or a Keras model with `score(x1, x2)` on preprocessed
        images, higher = more alike, and a calibrated `threshold` variable).
      max_image_pixels: larger images (height x width, each) are refused with an error.
    """

    def __init__(
        self,
        encoder,
        image_size,
        center_crop,
        projector=None,
        classifier=None,
        verifier=None,
        max_image_pixels=SERVING_MAX_IMAGE_PIXELS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if encoder is None:
            raise ValueError("export needs the encoder (the backbone mapping images to features)")
        for name, part in (
            ("encoder", encoder),
            ("projector", projector),
            ("classifier", classifier),
            ("verifier", verifier),
        ):
            if part is not None and not part.built:
                raise ValueError(f"the {name} is not built: call it on a batch (or build it) before exporting")
        if verifier is not None:
            if getattr(verifier, "threshold", None) is None or not callable(getattr(verifier, "score", None)):
                raise ValueError("the verifier must have score(images1, images2) and a calibrated `threshold`")
        self.encoder = encoder
        self.image_size = int(image_size)
        self.center_crop = bool(center_crop)
        self.projector = projector
        self.classifier = classifier
        self.verifier = verifier
        self.max_image_pixels = int(max_image_pixels)
        self.built = True

    def prepare(self, images, name="images"):
        return prepare_images(images, self.image_size, self.center_crop, name, self.max_image_pixels)

    def _features(self, images):
        return self.encoder(self.prepare(images), training=False)

    def embed(self, images):
        return {"embedding": _float32(self._features(images))}

    def project(self, images):
        return {"projection": _float32(self.projector(self._features(images), training=False))}

    def _classify(self, features):
        logits = _float32(self.classifier(features, training=False))
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "top5": tf.math.top_k(logits, k=min(5, int(logits.shape[-1]))).indices,
        }

    def classify(self, images):
        return self._classify(self._features(images))

    def verify(self, images1, images2):
        x1 = self.prepare(images1, "images1")
        x2 = self.prepare(images2, "images2")
        n1, n2 = tf.shape(x1)[0], tf.shape(x2)[0]
        same_batch = tf.debugging.Assert(
            tf.equal(n1, n2), ["images1 and images2 must hold the same number of images; got", n1, "and", n2]
        )
        # Both cut to the shorter batch so that no op but the assert fails on a mismatch
        # (see check_images).
        with tf.control_dependencies([same_batch]):
            n = tf.minimum(n1, n2)
        score = tf.reshape(_float32(self.verifier.score(x1[:n], x2[:n])), [-1])
        return {"score": score, "same": score >= _float32(self.verifier.threshold)}

    def call(self, images, training=False):
        features = self._features(images)
        outputs = {"embedding": _float32(features)}
        if self.projector is not None:
            outputs["projection"] = _float32(self.projector(features, training=False))
        if self.classifier is not None:
            outputs.update(self._classify(features))
        return outputs

    @property
    def kind(self):
        if self.verifier is not None:
            return "verify"
        if self.classifier is not None:
            return "linear"
        return "pretrain" if self.projector is not None else "encoder"

    def signature_names(self):
        """The SavedModel's signatures besides serving_default (uint8, then the `_float` twin)."""
        names = ["embed"]
        names += ["project"] if self.projector is not None else []
        names += ["classify"] if self.classifier is not None else []
        names += ["verify"] if self.verifier is not None else []
        return [n + suffix for n in names for suffix in ("", "_float")]

    def get_config(self):
        config = super().get_config()
        shared = self.verifier is not None and self.encoder is getattr(self.verifier, "backbone", None)
        parts = {"projector": self.projector, "classifier": self.classifier, "verifier": self.verifier}
        if not shared:
            parts["encoder"] = self.encoder
        config.update({k: keras.saving.serialize_keras_object(v) if v is not None else None for k, v in parts.items()})
        # The verifier's own backbone is the encoder: stored once, shared again on load.
        config.update(
            image_size=self.image_size,
            center_crop=self.center_crop,
            encoder_is_verifier_backbone=shared,
            max_image_pixels=self.max_image_pixels,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "projector", "classifier", "verifier"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        if config.pop("encoder_is_verifier_backbone", False):
            config["encoder"] = config["verifier"].backbone
        return cls(**config)


# --------------------------------------------------------------------------- writers


def _write_saved_model(path, model):
    endpoints = [("embed", model.embed, ["images"])]
    if model.projector is not None:
        endpoints.append(("project", model.project, ["images"]))
    if model.classifier is not None:
        endpoints.append(("classify", model.classify, ["images"]))
    if model.verifier is not None:
        endpoints.append(("verify", model.verify, ["images1", "images2"]))
    signatures = {}
    for name, fn, args in endpoints:
        for suffix, dtype in (("", tf.uint8), ("_float", tf.float32)):
            specs = [tf.TensorSpec(shape=None, dtype=dtype, name=a) for a in args]
            signatures[name + suffix] = tf.function(fn, input_signature=specs, autograph=False).get_concrete_function()
    signatures["serving_default"] = signatures["embed"]
    # Only the variables and the signatures are saved: no Keras object (the server needs
    # TensorFlow alone), and no tf.function attribute, which saving would trace again.
    root = tf.Module()
    root.model_variables = list(model.variables)
    with _save_info_held_back():
        tf.saved_model.save(root, path, signatures=signatures)


@contextlib.contextmanager
def _save_info_held_back():
    """Holds back the INFO lines TensorFlow logs while it saves ("Function `embed` contains input
    name(s) ...", "Assets written to: ..."), unless absl's verbosity asks for debug output
    (`--verbosity=1` on a tool). Warnings and errors pass; other INFO lines are untouched."""
    if absl_logging.get_verbosity() >= absl_logging.DEBUG:
        yield
        return
    # A filter, not a level: the save itself sets absl's verbosity flag and back, which
    # resets the absl logger's level.
    loggers = [absl_logging.get_absl_logger(), py_logging.getLogger("tensorflow")]
    for logger in loggers:
        logger.addFilter(_warnings_and_errors)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_warnings_and_errors)


def _warnings_and_errors(record):
    return record.levelno >= py_logging.WARNING


def load_keras_model(path):
    """Loads a `model.keras` written here: a `ServingModel`."""
    return keras.saving.load_model(path)


def _swap_in(new, final):
    """Moves `new` to `final`; an existing `final` is replaced only once `new` is complete."""
    if os.path.isdir(final):
        old = tempfile.mkdtemp(dir=os.path.dirname(final), prefix=".old-")
        os.rename(final, os.path.join(old, "previous"))
        os.rename(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, final)


def export_saved_model(path, encoder, image_size, center_crop, keras_path=None, **serving_options):
    """Writes a SavedModel serving `encoder` (and the head given) with raw-image signatures.

    The graph runs in the models' own dtype policy; every float output is float32.
    TensorFlow's INFO lines while saving are hidden unless absl's verbosity asks for
    them (`--verbosity=1` on a tool).

    Args:
        path: the SavedModel directory; an existing one is replaced only once the new
            one is complete (written beside it, then renamed).
        encoder: Keras model, [0, 1] images [N, S, S, 3] -> features [N, feat_dim].
        image_size: side of the images the encoder takes (the run's evaluation size).
        center_crop: resize and centre-crop (ImageNet protocol) instead of a plain resize.
        keras_path: also save the same `ServingModel` there as a `.keras` file.
        **serving_options: the `ServingModel`'s heads, each adding its signature (`projector`:
            `project`, `classifier`: `classify`, `verifier`: `verify`), and `max_image_pixels`
            (the signatures refuse images of more pixels each, height x width).

    Returns:
        The signature names written, besides serving_default.

    Example:
        ```python
        import numpy as np
        import tensorflow as tf
        import simsiam_tf as st

        encoder = st.build_backbone("resnet18", cifar_stem=True, width_multiplier=0.25)
        st.export_saved_model("export/saved_model", encoder, image_size=32, center_crop=False)
        loaded = tf.saved_model.load("export/saved_model")
        images = tf.constant(np.zeros([2, 40, 40, 3], np.uint8))  # any size: resized in the graph
        features = loaded.signatures["embed"](images=images)["embedding"]
        ```
    """
    model = ServingModel(encoder, image_size, center_crop, **serving_options)
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-export-")
    try:
        _write_saved_model(os.path.join(tmp, SAVED_MODEL_NAME), model)
        if keras_path is not None:
            model.save(os.path.join(tmp, KERAS_NAME))
        _swap_in(os.path.join(tmp, SAVED_MODEL_NAME), path)
        if keras_path is not None:
            keras_path = os.path.abspath(keras_path)
            os.makedirs(os.path.dirname(keras_path), exist_ok=True)
            os.replace(os.path.join(tmp, KERAS_NAME), keras_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model.signature_names()


def export_models(output_dir, encoder, image_size, center_crop, projector=None, classifier=None, verifier=None):
    """Writes `<output_dir>/saved_model`, `<output_dir>/model.keras` and the encoder's weights alone,
    `<output_dir>/encoder.weights.h5` (a start for another run: --init_from, --backbone_weights); returns
    `output_dir`."""
    output_dir = os.path.abspath(output_dir)
    export_saved_model(
        os.path.join(output_dir, SAVED_MODEL_NAME),
        encoder,
        image_size,
        center_crop,
        projector=projector,
        classifier=classifier,
        verifier=verifier,
        keras_path=os.path.join(output_dir, KERAS_NAME),
    )
    partial = os.path.join(output_dir, "partial." + ENCODER_WEIGHTS_NAME)
    encoder.save_weights(partial)
    os.replace(partial, os.path.join(output_dir, ENCODER_WEIGHTS_NAME))
    return output_dir
