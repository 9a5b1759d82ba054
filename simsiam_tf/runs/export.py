"""The export job: a finished run directory as a SavedModel and a `.keras` file.

Reads the run's flags.cfg (`simsiam_tf.config.flags`) to learn which job wrote it and how
to rebuild its model (`simsiam_tf.builders`), restores the latest checkpoint and writes
`<output_dir>/saved_model` and `<output_dir>/model.keras` (`simsiam_tf.serving`).
"""

import dataclasses
import os
import typing

import keras
import tensorflow as tf
from absl import logging

from simsiam_tf import builders, models, serving
from simsiam_tf import config as config_lib
from simsiam_tf.config import flags as config_flags
from simsiam_tf.errors import RunError
from simsiam_tf.serving import export
from simsiam_tf.training import checkpoints, preemption


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
        raise RunError(f"run directory {model_dir!r} does not exist")
    if kind is not None and kind not in config_lib.EXPORT_KINDS:
        raise RunError(f"kind must be one of {', '.join(config_lib.EXPORT_KINDS)}; got {kind!r}")
    try:
        checkpoint = checkpoints.resolve_checkpoint(model_dir, warn_damaged=False)  # the load reports damage
    except RunError:
        raise RunError(
            f"no checkpoint in {model_dir!r} (looked in {os.path.join(model_dir, checkpoints.CHECKPOINT_SUBDIR)}): "
            "train the run first, or give the directory of a run that saved one"
        ) from None
    if config is None:
        flags_path = os.path.join(model_dir, config_flags.FLAGS_FILE)
        if not os.path.exists(flags_path):
            raise RunError(
                f"{model_dir!r} has no {config_flags.FLAGS_FILE}: give a run directory written by simsiam-pretrain, "
                "simsiam-linear or simsiam-verify (from Python, pass the run's config)"
            )
        values = config_flags.read_flags_file(flags_path)
        kind = kind or config_flags.detect_kind(values)
        config = config_flags.config_from_flags(config_flags.CONFIGS[kind], values)
    elif kind is None:
        kind = {cls: k for k, cls in config_flags.CONFIGS.items()}.get(type(config))
        if kind is None:
            raise RunError(f"cannot export a run from a {type(config).__name__}; pass kind explicitly")
    image_size = int(config.data.image_size)
    return RunInfo(model_dir, kind, config, checkpoint, image_size, builders.eval_center_crop(image_size, kind))


def _encoder(info):
    return builders.build_encoder(
        info.config.model, tf.distribute.get_strategy(), info.config.runtime.seed, info.image_size
    )


# Each rebuilder returns (the checkpoint prefix read, the parts to export). The weights
# come from the run directory, so a damaged or non-finite newest checkpoint is skipped
# for the next older one, with a warning naming its file.


def _rebuild_pretrain(info):
    model = builders.build_model(info.config, tf.distribute.get_strategy())
    prefix = checkpoints.load_weights(info.model_dir, what="SimSiam model", model=model)
    return prefix, dict(encoder=model.backbone, projector=model.projector)


def _rebuild_linear(info):
    key = "model/classifier/bias/.ATTRIBUTES/VARIABLE_VALUE"
    shapes = tf.train.load_checkpoint(info.checkpoint).get_variable_to_shape_map()
    if key not in shapes:
        raise RunError(f"{info.checkpoint!r} holds no linear classifier: is it a simsiam-linear run?")
    probe = models.LinearProbe(_encoder(info), shapes[key][0])
    prefix = checkpoints.load_weights(info.model_dir, what="linear probe", model=probe)
    return prefix, dict(encoder=probe.encoder, classifier=probe.classifier)


def _rebuild_verify(info):
    verifier = builders.build_verifier(info.config, _encoder(info), tf.distribute.get_strategy())
    prefix = checkpoints.load_weights(info.model_dir, what="pair verifier", model=verifier)
    return prefix, dict(encoder=verifier.backbone, verifier=verifier)


_REBUILDERS = {"pretrain": _rebuild_pretrain, "linear": _rebuild_linear, "verify": _rebuild_verify}


def export_run(model_dir, output_dir=None, kind=None, config=None):
    """Rebuilds a run's model, restores its latest usable checkpoint and exports it.

    What `simsiam-export` runs. The model is rebuilt in float32 whatever precision it
    trained in; a damaged checkpoint is skipped with a warning for the next older one.

    Args:
        model_dir: a run directory of `simsiam-pretrain`, `simsiam-linear` or `simsiam-verify`.
        output_dir: where to write `saved_model/` and `model.keras`; default
            `<model_dir>/export`.
        kind: "pretrain", "linear" or "verify"; default: read from `<model_dir>/flags.cfg`.
        config: the job's config; default: read from `<model_dir>/flags.cfg`.

    Returns:
        The output directory.

    Raises:
        RunError: the directory holds no flags.cfg or no readable checkpoint (the
            message names it).

    Example:
        ```python
        import simsiam_tf as st

        st.export_run("outputs/demo")  # -> "outputs/demo/export"
        ```
    """
    return _export(inspect_run(model_dir, kind, config), output_dir)[1]


def rebuild(info):
    """(the checkpoint prefix read, {"encoder": ..., and the run's head}) of the run `info` describes.

    The model is rebuilt in float32 whatever precision it trained in, from the latest
    usable checkpoint (a damaged newest one is skipped with a warning).
    """
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return _REBUILDERS[info.kind](info)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _export(info, output_dir=None):
    """(the RunInfo with the checkpoint actually read, output_dir) of exporting the run `info` describes."""
    prefix, parts = rebuild(info)
    info = dataclasses.replace(info, checkpoint=prefix)
    path = serving.export_models(
        output_dir or os.path.join(info.model_dir, export.EXPORT_SUBDIR),
        image_size=info.image_size,
        center_crop=info.center_crop,
        **parts,
    )
    return info, path


def output_dir_of(config):
    """Where an `ExportConfig` writes: its output_dir, else `<model_dir>/export`."""
    return config.output_dir or os.path.join(config.model_dir, export.EXPORT_SUBDIR)


def run(config):
    """The `simsiam-export` job: exports the run `config.model_dir`; returns (RunInfo, output directory).

    The RunInfo names the checkpoint read: an older one when the newest is damaged.
    A SIGTERM meanwhile lets the export finish (it takes seconds, and a half-written
    export is never visible: it is written beside its place and renamed).
    """
    config.validate()
    with preemption.on_sigterm() as stop:
        result = _export(inspect_run(config.model_dir, config.kind), output_dir_of(config))
    if stop.requested:
        logging.warning("%s came during the export: finished it first (%s)", stop.signal_name, result[1])
    return result


def report(config, result):
    """What simsiam-export prints at the end: which run, from which checkpoint, to where."""
    info, path = result
    print(
        f"exported the {info.kind} run {config.model_dir} ({info.checkpoint}) to {path}: "
        f"{serving.SAVED_MODEL_NAME}/ and {serving.KERAS_NAME}"
    )
