"""The errors a job raises for its tools to turn into a message and an exit code. No TensorFlow here."""


class RunError(RuntimeError):
    """A run could not go on; the message says why and what to do."""

    exit_code = 1


class CollapseError(RunError):
    """Training stopped because the representation collapsed."""

    exit_code = 3


class NonFiniteStateError(RunError):
    """The model or optimizer state holds NaN/inf: nothing was saved."""


class DeadEncoderError(RunError):
    """The final encoder gives non-finite or identical embeddings."""


class EncoderChangedError(RunError):
    """The frozen encoder changed during the probe: its accuracy says nothing about the pretraining."""

    exit_code = 4


class CheckpointWriteError(RunError):
    """A checkpoint could not be written (disk full, file size limit, permissions): the previous one is kept."""


class PreemptedError(RunError):
    """A SIGTERM stopped the job after a step, whose checkpoint it saved: run the same command again to resume."""

    exit_code = 5
