"""The checks and on-disk faults of bench/fault_campaign.py: what a faulted run directory must still be.

Every readable checkpoint finite; flags.cfg, metrics.json and an export whole or absent;
the final checkpoint equal to the uninterrupted run's bit for bit. The faults on disk
damage the newest checkpoint while an older one remains to fall back to.
"""

import json
import os
import zipfile

import numpy as np
import tensorflow as tf

from simsiam_tf.config import flags as config_flags
from simsiam_tf.training import checkpoints, finite


class Failure(Exception):
    pass


# --------------------------------------------------------------------------- checks


def checkpoint_dir(run_dir):
    return os.path.join(run_dir, checkpoints.CHECKPOINT_SUBDIR)


def readable_prefixes(run_dir):
    out = []
    for prefix in checkpoints.checkpoint_prefixes(checkpoint_dir(run_dir)):
        try:
            tf.train.load_checkpoint(prefix)
        except checkpoints.CHECKPOINT_READ_ERRORS:
            continue
        out.append(prefix)
    return out


def check_files(run_dir, export_dir=None, load_export=False):
    """Raises Failure on a checkpoint holding NaN/inf, or a half-written flags.cfg, metrics.json or export."""
    for prefix in readable_prefixes(run_dir) if os.path.isdir(checkpoint_dir(run_dir)) else []:
        try:
            bad = finite.checkpoint_non_finite(prefix)
        except checkpoints.CHECKPOINT_READ_ERRORS:
            continue  # a data shard damaged on purpose
        if bad:
            raise Failure(f"{prefix} holds NaN/inf in {bad}")
    flags_path = os.path.join(run_dir, config_flags.FLAGS_FILE)
    if os.path.exists(flags_path):
        text = open(flags_path).read()
        if not text.endswith("\n") or not config_flags.read_flags_file(flags_path):
            raise Failure(f"{flags_path} is not whole")
    metrics = os.path.join(run_dir, "metrics.json")
    if os.path.exists(metrics):
        try:
            json.load(open(metrics))
        except ValueError as err:
            raise Failure(f"{metrics} is not whole: {err}") from None
    export_dir = export_dir or os.path.join(run_dir, "export")
    keras_file = os.path.join(export_dir, "model.keras")
    if os.path.exists(keras_file):
        try:
            with zipfile.ZipFile(keras_file) as archive:
                damaged = archive.testzip()
        except zipfile.BadZipFile as err:
            damaged = str(err)
        if damaged is not None:
            raise Failure(f"{keras_file} is not whole: {damaged}")
    saved = os.path.join(export_dir, "saved_model")
    if os.path.exists(saved):
        try:
            tf.train.load_checkpoint(os.path.join(saved, "variables", "variables"))
            model = tf.saved_model.load(saved) if load_export else None
        except (OSError, ValueError, tf.errors.OpError) as err:
            raise Failure(f"{saved} is not whole: {type(err).__name__}: {err}") from None
        if model is not None and "embed" not in model.signatures:
            raise Failure(f"{saved} has no embed signature")


def final_values(run_dir):
    reader = tf.train.load_checkpoint(readable_prefixes(run_dir)[0])
    names = [n for n in reader.get_variable_to_shape_map() if n.startswith(("model/", "optimizer/"))]
    return {n: reader.get_tensor(n) for n in names}


def same_bits(run_dir, reference):
    got = final_values(run_dir)
    if sorted(got) != sorted(reference):
        raise Failure(f"{run_dir}: the final checkpoint holds other variables than the uninterrupted run's")
    for name, value in reference.items():
        if not np.array_equal(got[name], value):
            raise Failure(f"{run_dir}: {name} differs from the uninterrupted run's")


# --------------------------------------------------------------------------- faults on disk


def damage(run_dir, kind, rng):
    """Damages the newest checkpoint (when an older one remains to fall back to); its step, or None."""
    prefixes = readable_prefixes(run_dir)
    if len(prefixes) < 2:
        return None
    prefix = prefixes[0]
    step = int(prefix.rsplit("-", 1)[1])
    files = [prefix + ".index"] + sorted(tf.io.gfile.glob(prefix + ".data-*"))
    path = rng.choice(files)
    if kind == "truncate":
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(rng.randrange(size))
    elif kind == "bit_flip":
        raw = bytearray(open(path, "rb").read())
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        open(path, "wb").write(bytes(raw))
    else:
        # the newest checkpoint's .index, or the `checkpoint` list (the .index files remain)
        os.remove(prefix + ".index" if rng.random() < 0.5 else os.path.join(checkpoint_dir(run_dir), "checkpoint"))
    return step
