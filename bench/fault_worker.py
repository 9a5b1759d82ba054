"""One job of the fault campaign, in a process that has loaded TensorFlow before it is told what to run.

Started by bench/fault_campaign.py, it imports TensorFlow and the jobs, prints `ready`,
then reads one JSON line: {"tool": "pretrain"|"linear"|"verify"|"export", "argv": [...],
"report": path, "nan_at_step": k or null, "fsize_limit": bytes or null}. It then runs the
tool's command-line main as `simsiam-<tool> argv...` would, with two additions:

- the step count reported to the file `report`: `start N` when a fit begins at step N,
  `step N` after each step (written after the job's own callbacks, so after its checkpoint);
- the faults that need the inside of the process: the float tensors of the batch of
  step `nan_at_step` (counting from 1) become NaN, and `fsize_limit` caps the size of
  every file it writes (RLIMIT_FSIZE, SIGXFSZ ignored so that the write fails with EFBIG:
  a full disk).
"""

import importlib
import json
import os
import resource
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from simsiam_tf.runs import export, linear, pretrain, verify  # noqa: E402

JOBS = {"pretrain": pretrain, "linear": linear, "verify": verify, "export": export}


class StepReporter(keras.callbacks.Callback):
    def __init__(self, write):
        super().__init__()
        self.write = write

    def on_train_batch_end(self, batch, logs=None):
        self.write(f"step {int(self.model.optimizer.iterations.numpy())}")


def _poison(batch):
    return tf.nest.map_structure(lambda t: t * float("nan") if t.dtype.is_floating else t, batch)


def instrument(job, write, nan_at_step):
    """Wraps the job module's `fit_from_step`: reports steps, and poisons the batch of step `nan_at_step`."""
    if not hasattr(job, "fit_from_step"):  # the export job trains nothing
        return
    fit = job.fit_from_step

    def fit_from_step(model, make_dataset, start_step, steps_per_epoch, epochs, callbacks, verbose):
        write(f"start {start_step}")
        if nan_at_step is not None:
            original = make_dataset

            def make_dataset(step):
                # batch i of this stream trains step step + i + 1
                def maybe_poison(i, batch):
                    return tf.cond(tf.equal(i, nan_at_step), lambda: _poison(batch), lambda: batch)

                return original(step).enumerate(start=step + 1).map(maybe_poison)

        return fit(model, make_dataset, start_step, steps_per_epoch, epochs, [*callbacks, StepReporter(write)], verbose)

    job.fit_from_step = fit_from_step


def main():
    print("ready", flush=True)
    command = json.loads(sys.stdin.readline())
    fd = os.open(command["report"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(line):
        os.write(fd, (line + "\n").encode())

    job = JOBS[command["tool"]]
    instrument(job, write, command.get("nan_at_step"))
    if command.get("fsize_limit"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(command["fsize_limit"]), resource.RLIM_INFINITY))
    write("go")
    cli = importlib.import_module(f"simsiam_tf.cli.{command['tool']}")
    sys.argv = [f"simsiam-{command['tool']}", *command["argv"]]
    cli.run_main()


if __name__ == "__main__":
    main()
