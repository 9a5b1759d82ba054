"""simsiam-data-worker: a tf.data service dispatcher or worker, for `simsiam-pretrain --data_service`.

  simsiam-data-worker --dispatcher --port=5050                          # one per job
  simsiam-data-worker --dispatcher_address=DISPATCHER_HOST:5050 --host=THIS_HOST   # one per CPU machine
  simsiam-pretrain ... --data_service=grpc://DISPATCHER_HOST:5050

The servers run until stopped (Ctrl-C or SIGTERM). The tf.data service has no
authentication or encryption, and TensorFlow opens its ports on every interface of
the machine: run it on a private network, behind a firewall that admits only the
trainers and the workers.

Exit codes: 0 stopped, 2 invalid flags.
"""

from simsiam_tf.cli import common

common.quiet_tensorflow()

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
DEFAULT_PORT = 5050
LOOPBACK = "127.0.0.1"

flags.DEFINE_bool("dispatcher", False, "Run the dispatcher (one per training job) instead of a worker.")
flags.DEFINE_string("dispatcher_address", None, "Worker mode: the dispatcher's HOST:PORT (grpc:// optional).")
flags.DEFINE_integer(
    "port", None, f"Port to serve on; default {DEFAULT_PORT} for the dispatcher, any free port for a worker."
)
flags.DEFINE_string(
    "host",
    LOOPBACK,
    "The address the dispatcher and the trainers reach this server at (a worker registers itself under it). "
    "The default, loopback, keeps everything on one machine; give the machine's private-network address for a fleet.",
)
flags.DEFINE_string(
    "work_dir", None, "Dispatcher mode: a directory for its journal, so that a restarted dispatcher recovers its jobs."
)
flags.DEFINE_integer("heartbeat_ms", 1000, "Worker mode: how often the worker asks the dispatcher for new work.")

WARNING = (
    "the tf.data service has no authentication and listens on every interface of this machine: "
    "keep it on a private network"
)


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments {' '.join(argv[1:])}: every option is a --flag")
    if FLAGS.dispatcher == bool(FLAGS.dispatcher_address):
        common.fail("give either --dispatcher (run the dispatcher) or --dispatcher_address=HOST:PORT (run a worker)")
    if FLAGS.port is not None and not 0 <= FLAGS.port < 65536:
        common.fail(f"--port must be in [0, 65535], got {FLAGS.port}")
    from simsiam_tf.data import service

    if FLAGS.dispatcher:
        port = DEFAULT_PORT if FLAGS.port is None else FLAGS.port
        server = service.start_dispatcher(port, work_dir=FLAGS.work_dir)
        # DispatchServer.target names localhost; the trainers need the host they reach it at.
        bound = server.target.rpartition(":")[2]
        print(f"dispatcher serving at grpc://{FLAGS.host}:{bound}", flush=True)
        print(
            f"  workers:  simsiam-data-worker --dispatcher_address={FLAGS.host}:{bound} --host=WORKER_HOST", flush=True
        )
        print(f"  trainers: simsiam-pretrain ... --data_service=grpc://{FLAGS.host}:{bound}", flush=True)
    else:
        address = FLAGS.dispatcher_address
        host_port = address[len(service.GRPC) :] if address.startswith(service.GRPC) else address
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            common.fail(f"--dispatcher_address must be HOST:PORT (e.g. 10.0.0.5:5050), got {address!r}")
        server = service.start_worker(host_port, port=FLAGS.port or 0, host=FLAGS.host, heartbeat_ms=FLAGS.heartbeat_ms)
        print(
            f"worker of dispatcher {host_port} serving at {FLAGS.host}:{server._address.rpartition(':')[2]}", flush=True
        )
    print(f"warning: {WARNING}", flush=True)
    server.join()
    return 0


def run_main():
    app.run(main)


if __name__ == "__main__":
    run_main()
