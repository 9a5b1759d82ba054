"""The tf.data service: a dispatcher, CPU workers, and a pretraining pipeline read from them.

When one host's cores cannot keep up with the accelerators, the pipeline's graph is
sent to a dispatcher, which hands its chunks (one chunk = one per-replica batch of one
step) to a fleet of workers; the trainer only receives finished batches.

Determinism: the pipeline of a random-access source starts from the chunk counter
(`Dataset.range`), which the service splits dynamically (`ShardingPolicy.DYNAMIC`,
the "distributed_epoch" mode): every chunk is produced by exactly one worker, and a
batch's images, crops and augmentation seeds are functions of (seed, step, replica)
alone, as without the service. What the service does not keep is the order: workers
deliver finished batches as they finish them, so the batch of step k may reach the
trainer a few steps early or late, and a run resumed from a checkpoint at step k
restarts the stream at chunk k: batches that were in flight (produced beyond k but
not yet trained on, or trained on out of order before k) can be seen twice or not at
all around the resume point. Streamed sources (large TFDS splits read through a
shuffle buffer) cannot be split by chunk and are refused.

The service has no authentication and no encryption. TensorFlow's servers listen on
every network interface of their machine (the gRPC port is opened on 0.0.0.0; the
server configs take a port, not an interface), so keep dispatcher and workers on a
private network or behind a firewall that admits only the trainers and workers. By
default a worker tells the dispatcher it is reachable at loopback (127.0.0.1), which
keeps a default setup on one machine.
"""

import hashlib
import os
import time

import tensorflow as tf

GRPC = "grpc://"
LOOPBACK = "127.0.0.1"
DEFAULT_DISPATCHER_PORT = 5050
HEARTBEAT_MS = 1000

_LAUNCH = f"{int(time.time() * 1000):x}{os.getpid():x}"


def check_address(address):
    """`grpc://HOST:PORT` -> `grpc://HOST:PORT`, with a clear error otherwise."""
    rest = address[len(GRPC) :] if address.startswith(GRPC) else ""
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"the tf.data service address must be grpc://HOST:PORT (e.g. grpc://10.0.0.5:5050), got {address!r}"
        )
    return address


def job_name(model_dir, start_step, pipeline_id=0):
    """A job name naming the run, its start step and input pipeline, unique to this launch.

    Consumers with the same job name share one job; a fresh name per launch keeps a
    restarted run from joining a job an earlier launch left behind mid-stream.
    """
    path = os.path.abspath(model_dir)
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    return f"simsiam-{os.path.basename(path) or 'run'}-{digest}-pipeline{pipeline_id}-step{start_step}-{_LAUNCH}"


def distribute(dataset, address, job_name=None):
    """`dataset` produced by the tf.data service at `address`, each element by one worker (dynamic sharding)."""
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=check_address(address),
            job_name=job_name,
        )
    )


def start_dispatcher(port=DEFAULT_DISPATCHER_PORT, work_dir=None, job_gc_timeout_ms=None):
    """A started `DispatchServer` on `port`; its `.target` is its grpc:// address.

    `work_dir` (optional) keeps the dispatcher's journal, so that a restarted
    dispatcher recovers its jobs.
    """
    config = tf.data.experimental.service.DispatcherConfig(
        port=int(port), work_dir=work_dir, fault_tolerant_mode=work_dir is not None
    )
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher_address, port=0, host=LOOPBACK, heartbeat_ms=HEARTBEAT_MS):
    """A started `WorkerServer` registered with the dispatcher at `host:port` (grpc:// optional).

    `host` is the address the dispatcher and the trainers reach this worker at: the
    default, loopback, serves trainers on the same machine only; give the worker's
    private-network address for a fleet. `port=0` picks a free port. A worker learns
    of new jobs at its heartbeat (TensorFlow's default: every 30 s); `heartbeat_ms`
    shortens the wait before a new run's first batch.
    """
    dispatcher = dispatcher_address[len(GRPC) :] if dispatcher_address.startswith(GRPC) else dispatcher_address
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher,
        port=int(port),
        worker_address=f"{host}:%port%",
        heartbeat_interval_ms=int(heartbeat_ms),
    )
    return tf.data.experimental.service.WorkerServer(config)
