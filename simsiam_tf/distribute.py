"""Distribution strategy and numeric precision, chosen by name."""
import keras
import tensorflow as tf
from absl import logging


def get_strategy(name="auto", tpu=None):
    """Returns a `tf.distribute.Strategy` for a name.

    auto: MirroredStrategy when more than one GPU is visible, else the default strategy.
    default: the no-op default strategy. one_device: the first GPU, else the CPU.
    mirrored: all local GPUs (or the CPU). multi_worker_mirrored: from the TF_CONFIG
    environment variable. tpu: a TPU at `tpu` (an address, a name, or "local").
    """
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        if not tpu:
            raise ValueError("strategy 'tpu' needs a TPU address (tpu='grpc://...', a TPU name, or 'local')")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="" if tpu == "local" else tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        f"unknown strategy {name!r}; choose one of auto, default, one_device, mirrored, multi_worker_mirrored, tpu"
    )


def resolve_sync_bn(setting, strategy):
    """'auto' turns synchronized BatchNorm on when there is more than one replica."""
    if setting in (True, "true"):
        return True
    if setting in (False, "false"):
        return False
    if setting == "auto":
        return strategy.num_replicas_in_sync > 1
    raise ValueError(f"sync_bn must be auto, true or false; got {setting!r}")


def set_precision(policy):
    """Sets the global Keras dtype policy (float32, mixed_float16 or mixed_bfloat16)."""
    if policy not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"precision must be float32, mixed_float16 or mixed_bfloat16; got {policy!r}")
    if policy == "mixed_float16" and not tf.config.list_logical_devices("GPU"):
        logging.warning("mixed_float16 on a CPU is slow and gains nothing; mixed_bfloat16 is the CPU/TPU choice")
    keras.mixed_precision.set_global_policy(policy)
