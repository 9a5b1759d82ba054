"""Starting a job in its run directory: check the flags against the run's, take the lock, and only then write.

A restart must rebuild the model the run directory holds. `check_same_model` compares
the flags that define the model's variables with the run's flags.cfg, before anything
is built or written; the checkpoint itself is checked when the job restores it.
`RunStart` holds the directory's lock for the job's lifetime; the job calls `started()`
once its checks passed (checkpoint restored or none there), which writes flags.cfg
atomically. A job that fails before that leaves the directory as it found it: a
directory the job created is removed again, and so is a lock file it created.
"""

import os

from simsiam_tf.config import flags as config_flags
from simsiam_tf.errors import RunError
from simsiam_tf.runs import lock
from simsiam_tf.training import determinism, distribute, preemption
from simsiam_tf.training.files import write_text_atomic


def _recorded_value(values, name):
    """The flags.cfg text of flag `name` ("false" for a `--noname` line), or None when it is not there."""
    if name in values:
        return values[name]
    if "no" + name in values:
        return "false"
    return None


def model_flag_differences(config, flags_path):
    """[(flag, value given, value in flags_path)] of the model-defining flags that differ from the run's flags.cfg.

    The model-defining flags are the settings marked `defines_variables` (`config.flags.model_flags`).
    Flags the file does not record are not compared.
    """
    names = config_flags.model_flags(type(config))
    values = config_flags.read_flags_file(flags_path)
    recorded = config_flags.config_from_flags(type(config), values)
    fields = config_flags.flag_fields(type(config))
    out = []
    for name in names:
        if _recorded_value(values, name) is None:
            continue
        path = fields[name][0]
        given, before = config_flags.get(config, path), config_flags.get(recorded, path)
        if given != before:
            out.append((name, given, before))
    return out


def _flag_text(name, value):
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"--{name}={value}"


def run_in_directory(job, config, flags_text, *args):
    """`job(config, start, *args)` holding the run directory: the model checked against the run's, then `RunStart`."""
    check_same_model(config, config.runtime.model_dir)
    with RunStart(config.runtime.model_dir, flags_text) as start:
        return job(config, start, *args)


def run_preemptible(job, config, flags_text, *args):
    """`run_in_directory` with a SIGTERM turned into a request the job's checkpointer answers (exit code 5).

    Not under multi_worker_mirrored, where the workers would have to agree on the step to stop at.
    """
    with preemption.on_sigterm(enabled=config.runtime.strategy != "multi_worker_mirrored"):
        return run_in_directory(job, config, flags_text, *args)


def strategy_of(runtime):
    """The job's distribution strategy, with op determinism turned on first when `runtime.deterministic`."""
    determinism.apply(runtime)
    return distribute.strategy_for(runtime)


def check_same_model(config, model_dir):
    """Raises RunError, naming the flags and the fix, when `model_dir`'s flags.cfg records another model."""
    flags_path = os.path.join(model_dir, config_flags.FLAGS_FILE)
    if not os.path.isfile(flags_path):
        return
    differences = model_flag_differences(config, flags_path)
    if not differences:
        return
    given = " ".join(_flag_text(name, value) for name, value, _ in differences)
    recorded = " ".join(_flag_text(name, value) for name, _, value in differences)
    raise RunError(
        f"{model_dir} holds a run of another model: it has {recorded} ({flags_path}), this run asks for {given}. "
        f"To resume it, keep its model flags (--flagfile={flags_path}, other flags after it); for a new model, "
        "give a new --model_dir. Nothing was written"
    )


class RunStart:
    """The run directory's lock, held while the job runs, and the flags.cfg written once the job has started.

    As a context manager: entering takes the lock (RunError at once when another process
    holds it); `started()` writes `flags_text` (if any) as `<directory>/flags.cfg`. When
    the job fails before `started()`, leaving removes the lock file and the directory if
    this job created them, so a failed start leaves no trace.
    """

    def __init__(self, directory, flags_text=None):
        self.directory = str(directory)
        self.flags_text = flags_text
        self.lock = lock.RunLock(self.directory)
        self.has_started = False
        self._created_directories = []
        self._created_lock_file = False

    def __enter__(self):
        if "://" not in self.directory:
            self._created_directories = _missing_directories(self.directory)
            self._created_lock_file = not os.path.exists(self.lock.path)
        try:
            self.lock.acquire()
        except BaseException:
            self._undo()
            raise
        return self

    def started(self):
        """The job passed its checks: from here on it writes the run directory, flags.cfg first."""
        if self.has_started:
            return
        self.has_started = True
        if self.flags_text is not None:
            write_text_atomic(os.path.join(self.directory, config_flags.FLAGS_FILE), self.flags_text)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not self.has_started and self._created_lock_file and self.lock.held:
            self.lock.remove_file()
        self.lock.release()
        if exc_type is not None and not self.has_started:
            self._undo()
        return False

    def _undo(self):
        for directory in self._created_directories:
            try:
                os.rmdir(directory)  # only when empty: never remove what someone else put there
            except OSError:
                return


def _missing_directories(directory):
    """`directory` and those of its parents that do not exist, innermost first."""
    out = []
    path = os.path.abspath(directory)
    while not os.path.exists(path):
        out.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return out
