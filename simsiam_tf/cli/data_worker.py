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

from simsiam_tf import config as config_lib  # noqa: E402

WARNING = (
    "the tf.data service has no authentication and listens on every interface of this machine: "
    "keep it on a private network"
)


def main(argv):
    if len(argv) > 1:
        common.fail(f"unexpected arguments {' '.join(argv[1:])}: every option is a --flag")
    config = common.config_from_flags(config_lib.DataWorkerConfig)
    from simsiam_tf.data import service

    if config.dispatcher:
        port = config_lib.DataWorkerConfig.DEFAULT_PORT if config.port is None else config.port
        server = service.start_dispatcher(port, work_dir=config.work_dir)
        # DispatchServer.target names localhost; the trainers need the host they reach it at.
        bound = server.target.rpartition(":")[2]
        print(f"dispatcher serving at grpc://{config.host}:{bound}", flush=True)
        print(
            f"  workers:  simsiam-data-worker --dispatcher_address={config.host}:{bound} --host=WORKER_HOST", flush=True
        )
        print(f"  trainers: simsiam-pretrain ... --data_service=grpc://{config.host}:{bound}", flush=True)
    else:
        host_port = config.dispatcher_host_port()
        server = service.start_worker(
            host_port, port=config.port or 0, host=config.host, heartbeat_ms=config.heartbeat_ms
        )
        print(
            f"worker of dispatcher {host_port} serving at {config.host}:{server._address.rpartition(':')[2]}",
            flush=True,
        )
    print(f"warning: {WARNING}", flush=True)
    server.join()
    return 0


common.define_tool_flags(config_lib.DataWorkerConfig, dry_run=False)


def run_main():
    common.run_main(main, __doc__)


if __name__ == "__main__":
    run_main()
