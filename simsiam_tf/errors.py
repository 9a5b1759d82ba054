"""The errors a job raises for its tools to turn into a message and an exit code. No TensorFlow here."""


class RunError(RuntimeError):
    """A run could not go on; the message says why and what to do."""

    exit_code = 1


class CollapseError(RunError):
    """Training stopped because the representation collapsed."""

    exit_code = 3
