"""The hold-out a job evaluates on, checked against the one its pretraining run recorded."""

import os

from simsiam_tf.config import flags as config_flags
from simsiam_tf.data import holdout
from simsiam_tf.errors import RunError
from simsiam_tf.training.files import read_json


def check_recorded(source, init_from):
    """Raises RunError when the run at `init_from` recorded another held-out file list than `source`'s.

    A changed folder (files added or removed since pretraining) moves images between the
    parts, so some held-out images may have been trained on.
    """
    if source is None or source.holdout is None:
        return
    path = config_flags.find_run_flags(init_from)
    if not path:
        return
    with open(path) as f:
        recorded = holdout.recorded_sha256(f.read())
    metrics_path = os.path.join(os.path.dirname(path), "metrics.json")
    if recorded is None and os.path.isfile(metrics_path):
        try:
            recorded = read_json(metrics_path).get("holdout", {}).get("files_sha256")
        except (OSError, ValueError, AttributeError):  # an unreadable metrics.json records nothing
            recorded = None
    if recorded is not None and recorded != source.holdout.files_sha256:
        raise RunError(
            f"the held-out images differ from those of the pretraining run {os.path.dirname(path)} (its flags.cfg "
            f"records files_sha256 {recorded}, this job's are {source.holdout.files_sha256}): the folder or "
            "--holdout_fraction/--holdout_seed changed since, so some held-out images may have been trained on. "
            "Restore the folder, or keep the run's --holdout_fraction and --holdout_seed"
        )


def metrics_entry(*sources):
    """{"holdout": the record of the first source cut by a hold-out}, or {} when none was."""
    for source in sources:
        if source is not None and source.holdout is not None:
            return {"holdout": source.holdout.describe()}
    return {}
