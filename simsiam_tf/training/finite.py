"""Finiteness of model and optimizer state: one fused check on device, names only on failure."""

import keras
import numpy as np
import tensorflow as tf

from simsiam_tf.errors import DeadEncoderError
from simsiam_tf.evaluation import monitor


def _underlying(variable):
    """The TensorFlow variable behind a Keras variable (a tf.Variable is its own)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _name(variable):
    return getattr(variable, "path", None) or variable.name


def float_variables(*trackables):
    """Every floating-point variable reachable from `trackables`, each once.

    `trackables` are what a checkpoint saves: Keras models and layers, optimizers (slots,
    learning rate), variables, or `tf.train.Checkpoint` objects grouping them. BatchNorm
    moving statistics are included: they are state a checkpoint writes, not only weights.
    """
    seen, out = set(), []
    for root in trackables:
        nodes = (
            [root] if isinstance(root, (tf.Variable, keras.Variable)) else tf.train.TrackableView(root).descendants()
        )
        for node in nodes:
            if not isinstance(node, (tf.Variable, keras.Variable)):
                continue
            key = id(_underlying(node))
            if key in seen or not tf.as_dtype(node.dtype).is_floating:
                continue
            seen.add(key)
            out.append(node)
    return out


class FiniteCheck:
    """Checks a fixed set of variables for NaN/inf.

    `all_finite()` runs one compiled reduction over every variable on the device that
    holds it and copies a single bool to the host; `non_finite()` is the slow path that
    reads each variable back to name the offenders, meant for after a failed check.
    """

    def __init__(self, variables):
        self.variables = list(variables)
        tensors = [_underlying(v) for v in self.variables]

        @tf.function(autograph=False)
        def reduce_all_finite():
            if not tensors:
                return tf.constant(True)
            return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in tensors]))

        self._reduce = reduce_all_finite

    def all_finite(self):
        return bool(self._reduce())

    def non_finite(self):
        """[(variable name, non-finite count, size)] for every variable holding NaN or inf."""
        out = []
        for variable in self.variables:
            values = np.asarray(keras.ops.convert_to_numpy(variable))
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            if bad:
                out.append((_name(variable), bad, int(values.size)))
        return out


def describe_non_finite(offenders, limit=3):
    """'3 of 184 variables hold NaN/inf, e.g. a (2 of 8 values), b (all 4 values)' style text."""
    parts = [f"{name} ({'all' if bad == size else f'{bad} of'} {size} values)" for name, bad, size in offenders[:limit]]
    more = f" and {len(offenders) - limit} more" if len(offenders) > limit else ""
    return ", ".join(parts) + more


def checkpoint_non_finite(prefix):
    """Names of the float tensors of the checkpoint `prefix` that hold NaN or inf (read on the host).

    Raises what `tf.train.load_checkpoint` raises for an unreadable checkpoint.
    """
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    out = []
    for key in sorted(dtypes):
        if key == "_CHECKPOINTABLE_OBJECT_GRAPH" or not dtypes[key].is_floating:
            continue
        values = np.asarray(reader.get_tensor(key))
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            out.append((key, bad, int(values.size)))
    return out


def check_embeddings_alive(embeddings, what="encoder", min_normalized_std=1e-3):
    """Raises DeadEncoderError when `embeddings` (one row per evaluation image) hold NaN/inf or barely vary.

    The spread is `monitor.normalized_std`: about 1.0 for embeddings spread over the unit
    sphere, 0.0 when every image maps to the same direction (e.g. after BatchNorm moving
    variances became inf). Returns the spread.
    """
    values = np.asarray(embeddings, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"embeddings must be a [N >= 2, dim] array; got shape {values.shape}")
    bad_rows = int(np.count_nonzero(~np.isfinite(values).all(axis=1)))
    if bad_rows:
        raise DeadEncoderError(
            f"the final {what} gives NaN/inf embeddings for {bad_rows} of {values.shape[0]} evaluation images: "
            "its weights or BatchNorm statistics are not finite; the run failed"
        )
    spread = float(monitor.normalized_std(values))
    if not spread >= min_normalized_std:
        raise DeadEncoderError(
            f"the final {what} gives the same embedding for every evaluation image (normalised std {spread:.2e} "
            f"< {min_normalized_std:g} over {values.shape[0]} images): it is dead, the run failed. "
            "Lower --base_lr or raise --batch_size"
        )
    return spread
