"""Atomic writes: a reader, or a crash, never sees a half-written text or JSON file."""

import json
import os
import tempfile


def write_text_atomic(path, text):
    """Replaces the file at `path` with `text` so that a reader (or a crash) never sees it half-written.

    The text goes to a temporary file in the same directory, is flushed to disk, and is
    renamed over `path`; the new file gets the usual permissions (0666 less the umask).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path) + "-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # the rename itself survives a power loss only once the directory is flushed
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_json_atomic(path, payload):
    """Writes JSON so that a reader never sees a half-written file."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)
