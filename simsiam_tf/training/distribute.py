"""Distribution strategy, numeric precision and multi-worker file rules, chosen by name.

Nothing here initialises TensorFlow's devices before a strategy is made: a
`MultiWorkerMirroredStrategy` must configure its collective ops before the runtime
starts, so device queries use `tf.config.list_physical_devices`, which leaves it
unstarted.
"""

import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging

from simsiam_tf.config import STRATEGIES
from simsiam_tf.training import cpu as cpu_lib

# The 16-bit policies already warned about as emulated on this CPU (warn once per process).
_warned_emulated = set()


def _gpus():
    return tf.config.list_physical_devices("GPU")


def get_strategy(name="auto", tpu=None):
    """Returns a `tf.distribute.Strategy` for a name.

    auto: MirroredStrategy when more than one GPU is visible, else the default strategy.
    default: the no-op default strategy. one_device: the first GPU, else the CPU.
    mirrored: all local GPUs (or the CPU). multi_worker_mirrored: the cluster in the
    TF_CONFIG environment variable (one process per machine; without TF_CONFIG, this
    machine alone). tpu: a TPU at `tpu` (an address, a name, or "local" on a TPU VM).

    Create the strategy before anything else touches TensorFlow devices (tensors,
    models, `tf.config.list_logical_devices`); multi_worker_mirrored fails otherwise.
    """
    if name == "auto":
        name = "mirrored" if len(_gpus()) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if _gpus() else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return _multi_worker_strategy()
    if name == "tpu":
        if not tpu:
            raise ValueError("strategy 'tpu' needs a TPU address (tpu='grpc://...', a TPU name, or 'local')")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="" if tpu == "local" else tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def _multi_worker_strategy():
    raw = os.environ.get("TF_CONFIG")
    if raw:
        try:
            tf_config = json.loads(raw)
            workers = tf_config["cluster"]["worker"]
            task = tf_config["task"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                'TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                f'"task": {{"type": "worker", "index": 0}}}}; got {raw!r} ({err})'
            ) from None
        logging.info(
            "multi-worker cluster of %d worker(s); this is %s %s", len(workers), task.get("type"), task.get("index")
        )
    else:
        logging.warning("strategy multi_worker_mirrored without TF_CONFIG: training on this machine alone")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        if "must be configured at program startup" not in str(err):
            raise
        raise RuntimeError(
            "multi_worker_mirrored must be created before TensorFlow starts its devices: call "
            "get_strategy first, before building models or tensors"
        ) from err


def per_replica_batch_size(global_batch_size, strategy):
    """The batch one replica sees: global / replicas; a ValueError when it does not divide."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {global_batch_size}")
    if global_batch_size % replicas:
        lower = global_batch_size // replicas * replicas
        nearest = f"{lower} or {lower + replicas}" if lower else f"{replicas}"
        raise ValueError(
            f"batch_size {global_batch_size} (the global batch) is not divisible by the {replicas} replicas "
            f"of strategy {type(strategy).__name__}: use a multiple of {replicas}, e.g. {nearest}"
        )
    return global_batch_size // replicas


def resolve_sync_bn(setting, strategy):
    """'auto' turns synchronized BatchNorm on when there is more than one replica."""
    if setting in (True, "true"):
        return True
    if setting in (False, "false"):
        return False
    if setting == "auto":
        return strategy.num_replicas_in_sync > 1
    raise ValueError(f"sync_bn must be auto, true or false; got {setting!r}")


def strategy_for(runtime):
    """The strategy of a job's `RuntimeConfig` (`get_strategy`), with its precision policy set (`set_precision`)."""
    strategy = get_strategy(runtime.strategy, runtime.tpu)
    set_precision(runtime.precision)
    return strategy


def set_precision(policy):
    """Sets the global Keras dtype policy (float32, mixed_float16 or mixed_bfloat16).

    With mixed_float16, `Model.compile` wraps the optimizer in a `LossScaleOptimizer`
    (dynamic loss scaling); the SimSiam train step scales its loss through it. Without a
    GPU or TPU, a 16-bit policy whose arithmetic this CPU emulates (no `avx512_bf16`/AMX
    for bfloat16, no `avx512_fp16` for float16, an `ONEDNN_MAX_CPU_ISA` cap below them, or
    oneDNN off) logs a warning once per policy: such a run is several times slower than
    float32 (`simsiam_tf.training.cpu.emulated_precision_warning`).
    """
    if policy not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"precision must be float32, mixed_float16 or mixed_bfloat16; got {policy!r}")
    if policy != "float32" and policy not in _warned_emulated:
        on_accelerator = _on_accelerator()
        message = cpu_lib.emulated_precision_warning(policy, on_gpu=on_accelerator)
        if not message and policy == "mixed_float16" and not on_accelerator:
            message = (
                "mixed_float16 is meant for GPUs; on a CPU use float32, or mixed_bfloat16 where the CPU has "
                "native bfloat16 (avx512_bf16 or AMX)"
            )
        if message:
            _warned_emulated.add(policy)
            logging.warning("%s", message)
    keras.mixed_precision.set_global_policy(policy)


def _on_accelerator():
    """Whether a GPU or a local TPU is visible (physical devices: this starts no runtime)."""
    return bool(_gpus() or tf.config.list_physical_devices("TPU"))


def in_multi_worker_mode(strategy):
    """True for a strategy spanning several worker processes (a multi-worker TF_CONFIG)."""
    # Every strategy `make_strategy` builds implements this (Keras reads it the same way).
    return bool(strategy.extended._in_multi_worker_mode())  # pylint: disable=protected-access


def is_chief(strategy):
    """True where this process owns the run directory: always, except on non-chief multi-workers."""
    return bool(strategy.extended.should_checkpoint)


def write_dir_for(model_dir, strategy):
    """Where this process writes its run files (checkpoints, logs, metrics).

    The chief (and every single-process run) writes to `model_dir`. The other workers
    of a multi-worker run must still save, as TensorFlow's multi-worker rule wants
    every worker to take part in a save, but into a fresh temporary directory of their
    own, removed by `remove_write_dir`. They restore from `model_dir`, which must
    therefore be storage every worker reads (GCS, NFS).
    """
    if is_chief(strategy):
        return model_dir
    task_id = strategy.cluster_resolver.task_id
    return tempfile.mkdtemp(prefix=f"simsiam-worker{task_id}-")


def remove_write_dir(write_dir, model_dir):
    """Removes a worker's temporary write directory; leaves `model_dir` alone."""
    if os.path.abspath(write_dir) != os.path.abspath(model_dir):
        shutil.rmtree(write_dir, ignore_errors=True)


def check_same_on_all_workers(strategy, value, what):
    """Raises unless every worker of a multi-worker run holds the same integer `value`.

    After a restore, a worker that did not see the chief's checkpoint would silently
    train from another step with other weights.
    """
    if not in_multi_worker_mode(strategy):
        return
    local = strategy.experimental_distribute_values_from_function(lambda _: tf.constant([int(value)], tf.int64))
    values = [int(v) for v in strategy.gather(local, axis=0).numpy()]
    if len(set(values)) > 1:
        raise RuntimeError(
            f"the workers disagree on {what}: {values} (one per replica). Every worker must read the "
            "chief's model_dir: put it on storage all machines share (GCS, NFS)"
        )


def fit(model, dataset, epochs, steps_per_epoch, initial_epoch=0, callbacks=None, verbose=1, shuffle=False):
    """`model.fit` on an endless (possibly distributed) dataset, under any strategy.

    Keras 3's `fit` does not run under multi_worker_mirrored (seen with Keras 3.15,
    TF 2.21): before the first step it averages an input batch across replicas with
    `strategy.reduce` on the whole (x1, x2) structure, which that strategy cannot
    reduce, and its compiled step averages the scalar metrics with
    `strategy.reduce(..., axis=0)`, which fails on scalars. Under that strategy this
    runs fit's loop itself: the model's `train_step` through `strategy.run` in one
    `tf.function` (with the model's `jit_compile`), metrics averaged over all replicas,
    the callbacks called as `fit` calls them, and one iterator across epochs as `fit`
    keeps with `steps_per_epoch`. Elsewhere it is `model.fit` (`shuffle` goes to it).
    Returns the `History` (None when no epoch ran).
    """
    strategy = model.distribute_strategy
    if not in_multi_worker_mode(strategy):
        return model.fit(
            dataset,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=shuffle,
        )
    if model.steps_per_execution != 1:
        raise ValueError("under multi_worker_mirrored, compile the model with steps_per_execution=1")
    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
        model=model,
    )
    train_function = _multi_worker_train_function(model, strategy)
    model.stop_training = False
    iterator = iter(dataset)
    callback_list.on_train_begin()
    epoch_logs = None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs = {}
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            logs = train_function(iterator)
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        # The train step returns every metric's running result: the last logs are the epoch's.
        epoch_logs = {name: float(value) for name, value in logs.items()}
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    if epochs > initial_epoch:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callback_list.on_train_end(logs=epoch_logs)
    return getattr(model, "history", None)


def _multi_worker_train_function(model, strategy):
    def one_step(data):
        outputs = strategy.run(model.train_step, args=(data,))
        return {name: strategy.reduce("MEAN", value, axis=None) for name, value in outputs.items()}

    if model.run_eagerly:
        return lambda iterator: one_step(next(iterator))
    one_step = tf.function(one_step, jit_compile=bool(model.jit_compile), reduce_retracing=True)
    return tf.function(lambda iterator: one_step(next(iterator)))
