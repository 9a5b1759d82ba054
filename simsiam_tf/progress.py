"""Progress output that suits where it goes: a redrawn bar on a terminal, a few lines in a log file.

A scheduler's log file (stdout not a terminal) fills with thousands of lines when a
progress bar is redrawn into it; there, Keras' `verbose=2` prints one line per epoch,
and `Progress` one line every `LOG_EVERY_SECONDS`.
"""

import sys
import time

from simsiam_tf.config.sections import check_verbose

# Nothing is shown for work that ends sooner than this: a quick scan stays silent.
QUIET_SECONDS = 2.0
LOG_EVERY_SECONDS = 30.0


def interactive(stream=None):
    """Whether `stream` (default stdout) redraws: a terminal, or a notebook (ipykernel), as Keras decides."""
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def resolve_verbose(verbose, stream=None):
    """Keras' `verbose` from a config's: "auto" is 1 (a progress bar) on a terminal or in a notebook, else 2
    (one line per epoch); 0, 1, 2 (or their strings) are taken as they are."""
    if verbose == "auto":
        return 1 if interactive(stream) else 2
    check_verbose(verbose)
    return int(verbose)


class Progress:
    """Counts `total` items of a long task (`update(n)`), shown once it has taken `QUIET_SECONDS`.

    On a terminal a line redrawn in place; elsewhere one line every `LOG_EVERY_SECONDS`
    and one at the end.
    """

    def __init__(self, total, label, stream=None, clock=time.monotonic):
        self.total = total
        self.label = label
        self.stream = stream or sys.stdout
        self.redraw = interactive(self.stream)
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.shown_at = None

    def _line(self):
        elapsed = self.clock() - self.started
        if self.total:
            return f"{self.label}: {self.done}/{self.total} ({100.0 * self.done / self.total:.0f}%), {elapsed:.0f} s"
        return f"{self.label}: {self.done}, {elapsed:.0f} s"

    def _show(self, final=False):
        now = self.clock()
        if self.redraw:
            self.stream.write("\r" + self._line() + ("\n" if final else ""))
        else:
            self.stream.write(self._line() + "\n")
        self.stream.flush()
        self.shown_at = now

    def update(self, n=1):
        self.done += n
        now = self.clock()
        if now - self.started < QUIET_SECONDS:
            return
        if self.redraw or self.shown_at is None or now - self.shown_at >= LOG_EVERY_SECONDS:
            self._show()

    def close(self):
        """The last line, if anything was shown."""
        if self.shown_at is not None:
            self._show(final=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
