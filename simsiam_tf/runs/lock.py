"""One running job per run directory: an exclusive lock with a record of who holds it.

The lock is `fcntl.flock` on `<model_dir>/run.lock`, a file that also holds a JSON
record of the holder (host, pid, start time, command line). The kernel drops a flock
when its process ends, however it ends (kill -9 included), so a dead holder never
blocks a run; the record it leaves behind only tells the next run to warn that the
previous one did not finish cleanly. The file is emptied, not deleted, on release:
deleting it would let two processes lock two different files of the same name.

File systems: local ones lock as described. On NFSv4 (and NFSv3 with lockd) Linux
maps flock to POSIX locks that the server arbitrates, so runs on different hosts
exclude each other too; a lock held by a client that crashed is released when the
server's lease expires. Where the file system refuses locks (some FUSE and SMB mounts:
ENOLCK/ENOTSUP), the record alone decides, with a warning: a record of a live process
on this host, or of any other host, refuses the run; one of a dead process on this host
is taken over. Object stores (`gs://`, `s3://` and other `tf.io.gfile` schemes) cannot
lock at all: the run warns that concurrent runs there go undetected and proceeds.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time

from absl import logging

from simsiam_tf.errors import RunError

LOCK_FILE = "run.lock"
_COMMAND_CHARS = 300
_OPEN_ATTEMPTS = 10
_REMOVED = object()


def _is_remote(path):
    return "://" in str(path)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _describe(record):
    if not record:
        return "another process (it left no record of itself)"
    since = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(record.get("since", 0)))
    text = f"pid {record.get('pid')} on host {record.get('host')} since {since}"
    if record.get("command"):
        text += f" ({record['command']})"
    return text


class RunLock:
    """Exclusive use of `model_dir` by this process, as a context manager or with acquire()/release().

    `acquire` raises RunError at once, naming the holder, when another live process
    holds the directory; it takes over with a warning the lock of a process that died.
    """

    def __init__(self, model_dir, command=None):
        self.model_dir = str(model_dir)
        self.path = os.path.join(self.model_dir, LOCK_FILE)
        self.command = " ".join(sys.argv)[:_COMMAND_CHARS] if command is None else command[:_COMMAND_CHARS]
        self._fd = None
        self.held = False

    def _record(self):
        return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(), "command": self.command}

    def _read_record(self, fd):
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        if not raw.strip():
            return None
        try:
            record = json.loads(raw.decode("utf-8", "replace"))
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def _write_record(self, fd):
        data = (json.dumps(self._record(), sort_keys=True) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _refuse(self, record):
        raise RunError(
            f"the run directory {self.model_dir} is in use by {_describe(record)}: wait for that run to end, "
            f"or give this one another --model_dir (if no such process runs, delete {self.path})"
        )

    def acquire(self):
        if self.held:
            return self
        if _is_remote(self.model_dir):
            logging.warning(
                "cannot lock %s: object stores have no locks, so another run writing to the same directory "
                "would go undetected",
                self.model_dir,
            )
            self.held = True
            return self
        os.makedirs(self.model_dir, exist_ok=True)
        for _ in range(_OPEN_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._lock_open_file(fd)
            except BaseException:
                os.close(fd)
                raise
            if locked is not _REMOVED:
                break
            os.close(fd)  # the holder removed the file while this process waited for it: lock the new one
        else:
            raise RunError(f"cannot lock {self.path}: the file keeps being removed by another process")
        self._fd = fd
        self.held = True
        return self

    def _lock_open_file(self, fd):
        """Locks the open lock file `fd` and writes this process's record; _REMOVED when the path no longer names it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._refuse(self._read_record(fd))
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._without_flock(fd, err)
        else:
            if not self._still_at_path(fd):
                return _REMOVED
            previous = self._read_record(fd)
            if previous is not None:
                logging.warning(
                    "taking over the lock of %s from %s, which ended without releasing it (killed or "
                    "crashed): its last checkpoint is where this run resumes",
                    self.model_dir,
                    _describe(previous),
                )
        self._write_record(fd)
        return True

    def _still_at_path(self, fd):
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def _without_flock(self, fd, err):
        logging.warning(
            "the file system of %s cannot lock (%s): relying on the record in %s alone",
            self.model_dir,
            os.strerror(err.errno),
            self.path,
        )
        record = self._read_record(fd)
        if record is None:
            return
        same_host = record.get("host") == socket.gethostname()
        pid = record.get("pid")
        if not same_host or not isinstance(pid, int) or _pid_alive(pid):
            self._refuse(record)
        logging.warning("taking over the lock of %s from %s, which no longer runs", self.model_dir, _describe(record))

    def remove_file(self):
        """Deletes the lock file while still holding it (a run that never started leaves no file behind).

        A process that opened the file meanwhile finds, once it gets the lock, that the
        path no longer names its file, and locks a new one: two processes never hold
        two files of the same name.
        """
        if self.held and self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)

    def release(self):
        if not self.held:
            return
        self.held = False
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # an empty file: released cleanly
            os.fsync(fd)
        os.close(fd)  # closing drops the flock

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
