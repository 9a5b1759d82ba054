"""SavedModel and `.keras` export of trained models, with the preprocessing in the graph.

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
InvalidArgumentError whose message starts "images must be [batch, height, width, 3]".

`model.keras` holds the same model (`ServingModel`) for Keras users: `model(images)`
returns the dict of `embed` plus `project` or `classify`, `model.verify(images1,
images2)` that of `verify`, with the same input rules. Load it with `keras.saving.load_model`
once `simsiam_tf.export` is imported (it registers the package's Keras classes), or
with `load_keras_model`.
"""
import dataclasses
import os
import shutil
import tempfile
import typing

import keras
import tensorflow as tf

from simsiam_tf import augment, models
from simsiam_tf import config as config_lib
# Registers PairVerifier, which a verify run's model.keras refers to.
from simsiam_tf import verifier as verifier_lib  # noqa: F401
from simsiam_tf.runs import common

EXPORT_SUBDIR = "export"
SAVED_MODEL_NAME = "saved_model"
KERAS_NAME = "model.keras"
FLAGS_FILE = "flags.cfg"
KINDS = ("pretrain", "linear", "verify")
IMAGES_MESSAGE = "images must be [batch, height, width, 3] (RGB) or [batch, height, width, 1] (grayscale)"


# --------------------------------------------------------------------------- graph pieces


def check_images(images, name="images"):
    """Raw serving images -> [N, H, W, 3] with the same dtype; grayscale repeated to RGB.

    A tensor of another rank or channel count fails at run time with an
    InvalidArgumentError naming the expected layout and the shape received.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    # When a caller's input shape is known, Grappler specialises the graph to it and
    # reports the first op whose shape rule fails, before any assert has run. So no op
    # here may index a dimension that a bad input lacks: a bad input is reshaped to
    # [size, 1, 1, 1] instead, and the assert below is the only error it meets.
    dims = tf.concat([shape, tf.zeros([4], shape.dtype)], 0)[:4]
    channels = dims[3]
    ok = tf.logical_and(
        tf.equal(tf.size(shape), 4), tf.logical_or(tf.equal(channels, 3), tf.equal(channels, 1))
    )
    message = IMAGES_MESSAGE.replace("images", name, 1)
    valid = tf.debugging.Assert(ok, [message, "got shape", shape], summarize=8)
    with tf.control_dependencies([valid]):
        flat = tf.reshape(images, [-1])
    fallback = tf.stack([tf.size(images, out_type=shape.dtype), 1, 1, 1])
    images = tf.reshape(flat, tf.where(ok, dims, fallback))
    images = tf.tile(images, tf.stack([1, 1, 1, 3 // tf.where(ok, channels, 1)]))
    images.set_shape([None, None, None, 3])
    return images


def prepare_images(images, image_size, center_crop, name="images"):
    """Raw images (uint8 or float [0, 1]) -> the model's input: float32 [N, image_size, image_size, 3]."""
    return augment.eval_preprocess(check_images(images, name), image_size, center_crop)


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
      image_size, center_crop: the run's evaluation preprocessing
        (`augment.eval_preprocess(images, image_size, center_crop)`).
      projector: Keras model, features -> projection.
      classifier: Keras layer or model, features -> logits (e.g. `LinearProbe.classifier`).
      verifier: a `PairVerifier` (or a Keras model with `score(x1, x2)` on preprocessed
        images, higher = more alike, and a calibrated `threshold` variable).
    """

    def __init__(self, encoder, image_size, center_crop, projector=None, classifier=None, verifier=None, **kwargs):
        super().__init__(**kwargs)
        if encoder is None:
            raise ValueError("export needs the encoder (the backbone mapping images to features)")
        for name, part in (("encoder", encoder), ("projector", projector), ("classifier", classifier),
                           ("verifier", verifier)):
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
        self.built = True

    def prepare(self, images, name="images"):
        return prepare_images(images, self.image_size, self.center_crop, name)

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
        config.update(image_size=self.image_size, center_crop=self.center_crop, encoder_is_verifier_backbone=shared)
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
    tf.saved_model.save(root, path, signatures=signatures)


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


def export_saved_model(
    path, encoder, image_size, center_crop, projector=None, classifier=None, verifier=None, keras_path=None
):
    """Writes a SavedModel serving `encoder` (and the head given) with raw-image signatures.

    Arguments as `ServingModel`. `path` is the SavedModel directory; an existing one is
    replaced only once the new one is complete (written beside it, then renamed).
    With `keras_path`, the same `ServingModel` is also saved there as a `.keras` file.
    Returns the signature names (besides serving_default).

    The graph runs in the models' own dtype policy; every float output is float32.
    """
    model = ServingModel(encoder, image_size, center_crop, projector, classifier, verifier)
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
    """Writes `<output_dir>/saved_model` and `<output_dir>/model.keras`; returns `output_dir`."""
    output_dir = os.path.abspath(output_dir)
    export_saved_model(
        os.path.join(output_dir, SAVED_MODEL_NAME), encoder, image_size, center_crop,
        projector=projector, classifier=classifier, verifier=verifier,
        keras_path=os.path.join(output_dir, KERAS_NAME),
    )
    return output_dir


def export_after_run(
    model_dir, kind, encoder, image_size, center_crop, projector=None, classifier=None, verifier=None
):
    """What a job calls at its end when `export=True`: writes `<model_dir>/export/`.

    `kind` is "pretrain" (pass the projector), "linear" (pass the classifier, e.g.
    `LinearProbe.classifier`) or "verify" (pass the `PairVerifier`). Returns the export
    directory.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    name, part = {"pretrain": ("projector", projector), "linear": ("classifier", classifier),
                  "verify": ("verifier", verifier)}[kind]
    if part is None:
        raise ValueError(f"a {kind} export needs the {name}")
    return export_models(
        os.path.join(model_dir, EXPORT_SUBDIR), encoder, image_size, center_crop,
        projector=projector, classifier=classifier, verifier=verifier,
    )


# --------------------------------------------------------------------------- run directories


def read_flags_file(path):
    """The `--name=value` lines of a flagfile as {name: value string}.

    A bare `--name` reads as "true"; `--noname` is kept as is and resolved against the
    config's boolean fields by `config_from_flags`. A `# tool: simsiam-NAME` comment
    line is kept as {"#tool": "simsiam-NAME"}.
    """
    values = {}
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                body = line[1:].strip()
                if body.startswith("tool:"):
                    values["#tool"] = body[len("tool:"):].strip()
                continue
            if not line.startswith("--"):
                raise common.RunError(f"{path}:{number}: expected --name=value, got {line!r}")
            name, sep, value = line[2:].partition("=")
            values[name] = value if sep else "true"
    return values


def _fields(config_cls, prefix=""):
    """{flag name: (field path, type)} of a config dataclass and its nested sections."""
    out = {}
    for field in dataclasses.fields(config_cls):
        if dataclasses.is_dataclass(field.type):
            out.update(_fields(field.type, prefix + field.name + "."))
        else:
            out[field.name] = (prefix + field.name, field.type)
    return out


def _optional_of(kind):
    if typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return None


def _field_of(fields, name):
    """(field path, type, negated) of a flag name, `--noX` for a boolean X included; None when unknown."""
    if name in fields:
        return fields[name] + (False,)
    if name.startswith("no") and name[2:] in fields:
        path, kind = fields[name[2:]]
        if (_optional_of(kind) or kind) is bool:
            return path, kind, True
    return None


def _convert(name, text, kind):
    inner = _optional_of(kind)
    if inner is not None:
        return None if text in ("", "None") else _convert(name, text, inner)
    try:
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0] if typing.get_args(kind) else str
            return tuple(_convert(name, part.strip(), item) for part in text.split(",") if part.strip())
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return lowered in ("true", "1")
        if kind in (int, float):
            return kind(text)
    except ValueError:
        raise common.RunError(f"flag --{name}={text} is not a valid {getattr(kind, '__name__', kind)}") from None
    return text


def config_from_flags(config_cls, values):
    """A config dataclass from flagfile values (`read_flags_file`); flags it has no field for are ignored."""
    fields = _fields(config_cls)
    changes = {}
    for name, text in values.items():
        found = _field_of(fields, name)
        if found is None:
            continue
        path, kind, negated = found
        changes[path] = False if negated else _convert(name, text, kind)
    return config_lib.replace(config_cls(), **changes)


CONFIGS = {"pretrain": config_lib.PretrainConfig, "linear": config_lib.LinearConfig, "verify": config_lib.VerifyConfig}


def detect_kind(values):
    """Which job wrote a flagfile: its `# tool:` line, else the job whose config knows all its flags.

    Every tool's flags are its config's fields, so the right job knows every flag; among
    several, the one with the fewest fields left unset wins.
    """
    tool = values.get("#tool", "")
    if tool.startswith("simsiam-") and tool[len("simsiam-"):] in CONFIGS:
        return tool[len("simsiam-"):]
    names = [n for n in values if not n.startswith("#")]
    ranked = []
    for kind, cls in CONFIGS.items():
        fields = _fields(cls)
        unknown = sorted(n for n in names if _field_of(fields, n) is None)
        known = {_field_of(fields, n)[0] for n in names if n not in unknown}
        ranked.append((len(unknown), len(fields) - len(known), KINDS.index(kind), kind, unknown))
    ranked.sort()
    unknown, _, _, kind, names_unknown = ranked[0]
    if unknown:
        raise common.RunError(
            f"cannot tell which tool wrote these flags: even simsiam-{kind} does not know "
            f"--{', --'.join(names_unknown)}"
        )
    return kind


def eval_center_crop(kind, image_size):
    """The centre-crop rule of a job's evaluation preprocessing.

    Pretraining and the linear probe resize + centre-crop ImageNet-size images and resize
    small ones; the pair pipeline of verification always resizes the whole image.
    """
    if kind == "verify":
        return False
    from simsiam_tf.runs import pretrain

    return pretrain.eval_center_crop(image_size)


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What `inspect_run` found in a run directory."""

    model_dir: str
    kind: str
    config: typing.Any
    checkpoint: str
    image_size: int
    center_crop: bool


def inspect_run(model_dir, kind=None, config=None):
    """Reads a run directory: its kind, config (from flags.cfg unless given) and latest checkpoint.

    Raises `RunError` naming the directory when it is not a run directory or holds no
    checkpoint. Builds nothing.
    """
    if not os.path.isdir(model_dir):
        raise common.RunError(f"run directory {model_dir!r} does not exist")
    if kind is not None and kind not in KINDS:
        raise common.RunError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    try:
        checkpoint = common.resolve_checkpoint(model_dir)
    except common.RunError:
        raise common.RunError(
            f"no checkpoint in {model_dir!r} (looked in {os.path.join(model_dir, common.CHECKPOINT_SUBDIR)}): "
            "train the run first, or give the directory of a run that saved one"
        ) from None
    if config is None:
        flags_path = os.path.join(model_dir, FLAGS_FILE)
        if not os.path.exists(flags_path):
            raise common.RunError(
                f"{model_dir!r} has no {FLAGS_FILE}: give a run directory written by simsiam-pretrain, "
                "simsiam-linear or simsiam-verify (from Python, pass the run's config)"
            )
        values = read_flags_file(flags_path)
        kind = kind or detect_kind(values)
        config = config_from_flags(CONFIGS[kind], values)
    elif kind is None:
        kind = {cls: k for k, cls in CONFIGS.items()}.get(type(config))
        if kind is None:
            raise common.RunError(f"cannot export a run from a {type(config).__name__}; pass kind explicitly")
    image_size = int(config.data.image_size)
    return RunInfo(model_dir, kind, config, checkpoint, image_size, eval_center_crop(kind, image_size))


def _encoder(info):
    from simsiam_tf.runs import pretrain

    return pretrain.build_encoder(info.config.model, tf.distribute.get_strategy(), info.config.runtime.seed)


def _rebuild_pretrain(info):
    from simsiam_tf.runs import pretrain

    model = pretrain.build_model(info.config, tf.distribute.get_strategy())
    common.load_weights(info.checkpoint, what="SimSiam model", model=model)
    return dict(encoder=model.backbone, projector=model.projector)


def _rebuild_linear(info):
    key = "model/classifier/bias/.ATTRIBUTES/VARIABLE_VALUE"
    shapes = tf.train.load_checkpoint(info.checkpoint).get_variable_to_shape_map()
    if key not in shapes:
        raise common.RunError(f"{info.checkpoint!r} holds no linear classifier: is it a simsiam-linear run?")
    probe = models.LinearProbe(_encoder(info), shapes[key][0])
    common.load_weights(info.checkpoint, what="linear probe", model=probe)
    return dict(encoder=probe.encoder, classifier=probe.classifier)


def _rebuild_verify(info):
    from simsiam_tf.runs import verify

    verifier = verify.build_verifier(info.config, _encoder(info), tf.distribute.get_strategy())
    common.load_weights(info.checkpoint, what="pair verifier", model=verifier)
    return dict(encoder=verifier.backbone, verifier=verifier)


_REBUILDERS = {"pretrain": _rebuild_pretrain, "linear": _rebuild_linear, "verify": _rebuild_verify}


def export_run(model_dir, output_dir=None, kind=None, config=None):
    """Rebuilds a run's model, restores its latest checkpoint and exports it; returns output_dir.

    Writes `<output_dir>/saved_model` and `<output_dir>/model.keras`; output_dir defaults
    to `<model_dir>/export`. The job (pretrain, linear or verify) and its settings come
    from `<model_dir>/flags.cfg` unless `kind`/`config` are given. The model is rebuilt
    in float32 whatever precision it trained in. Raises `RunError` naming the directory
    when it holds no checkpoint.
    """
    info = inspect_run(model_dir, kind, config)
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        parts = _REBUILDERS[info.kind](info)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return export_models(
        output_dir or os.path.join(model_dir, EXPORT_SUBDIR), image_size=info.image_size,
        center_crop=info.center_crop, **parts,
    )
