import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from simsiam_tf.errors import RunError
from simsiam_tf.runs import lock

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_second_lock_on_the_same_directory_fails_at_once_naming_the_holder(tmp_path):
    with lock.RunLock(str(tmp_path), command="simsiam-pretrain --model_dir=x"):
        started = time.time()
        with pytest.raises(RunError) as info:
            lock.RunLock(str(tmp_path)).acquire()
        assert time.time() - started < 1.0
    message = str(info.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "(simsiam-pretrain --model_dir=x)" in message
    assert time.strftime("%Y-%m-%d") in message
    assert str(tmp_path) in message and "another --model_dir" in message


def test_release_empties_the_record_and_lets_the_next_run_lock_without_warning(tmp_path, caplog):
    first = lock.RunLock(str(tmp_path / "run"), command="first").acquire()
    record = json.loads((tmp_path / "run" / lock.LOCK_FILE).read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname() and record["command"] == "first"
    first.release()
    assert (tmp_path / "run" / lock.LOCK_FILE).read_text() == ""
    with caplog.at_level(logging.WARNING), lock.RunLock(str(tmp_path / "run"), command="second"):
        assert json.loads((tmp_path / "run" / lock.LOCK_FILE).read_text())["command"] == "second"
    assert "taking over" not in caplog.text


def test_a_record_left_behind_is_taken_over_with_a_warning(tmp_path, caplog):
    (tmp_path / lock.LOCK_FILE).write_text(json.dumps({"host": "h1", "pid": 999999, "since": 0, "command": "old run"}))
    with caplog.at_level(logging.WARNING), lock.RunLock(str(tmp_path)) as held:
        assert held.held
    assert "taking over the lock" in caplog.text and "pid 999999 on host h1" in caplog.text


def test_a_lock_file_removed_by_its_holder_is_never_locked_twice(tmp_path):
    holder = lock.RunLock(str(tmp_path), command="holder").acquire()
    waiter = lock.RunLock(str(tmp_path), command="waiter")
    stale_fd = os.open(waiter.path, os.O_RDWR)  # opened while the holder still had the file
    try:
        holder.remove_file()
        holder.release()
        assert not os.path.exists(waiter.path)
        # the waiter gets the flock of the removed file, sees that the path no longer names it
        assert waiter._lock_open_file(stale_fd) is lock._REMOVED
    finally:
        os.close(stale_fd)
    with waiter:
        assert json.loads((tmp_path / lock.LOCK_FILE).read_text())["command"] == "waiter"
        with pytest.raises(RunError, match=r"\(waiter\)"):
            lock.RunLock(str(tmp_path)).acquire()


def test_object_store_paths_warn_that_they_cannot_lock(caplog):
    with caplog.at_level(logging.WARNING), lock.RunLock("gs://bucket/run") as held:
        assert held.held
    assert "cannot lock gs://bucket/run" in caplog.text


def _python(code):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_lock_between_processes_and_takeover_after_kill_9(tmp_path, caplog):
    run_dir = str(tmp_path / "run")
    holder = _python(f"""
        import sys, time
        from simsiam_tf.runs import lock
        lock.RunLock({run_dir!r}, command="holder-process").acquire()
        print("held", flush=True)
        time.sleep(600)
    """)
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        contender = _python(f"""
            import sys
            from simsiam_tf.runs import lock
            from simsiam_tf.errors import RunError
            try:
                lock.RunLock({run_dir!r}).acquire()
            except RunError as err:
                print(err, file=sys.stderr)
                sys.exit(err.exit_code)
            print("acquired")
        """)
        out, err = contender.communicate(timeout=120)
        assert contender.returncode == 1, (out, err)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in err
        assert "(holder-process)" in err
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    with caplog.at_level(logging.WARNING), lock.RunLock(run_dir, command="after") as held:
        assert held.held
    assert f"taking over the lock of {run_dir} from pid {holder.pid}" in caplog.text


@pytest.fixture
def no_flock(monkeypatch):
    import errno

    def refuse(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock.fcntl, "flock", refuse)


def _leave_record(directory, host, pid):
    (directory / lock.LOCK_FILE).write_text(json.dumps({"host": host, "pid": pid, "since": 0, "command": "c"}))


def test_without_flock_a_live_holder_on_this_host_or_any_other_host_refuses(tmp_path, no_flock):
    _leave_record(tmp_path, socket.gethostname(), os.getppid())
    with pytest.raises(RunError, match=f"pid {os.getppid()} on host"):
        lock.RunLock(str(tmp_path)).acquire()
    _leave_record(tmp_path, "some-other-host", 1)
    with pytest.raises(RunError, match="on host some-other-host"):
        lock.RunLock(str(tmp_path)).acquire()


def test_without_flock_a_dead_holder_on_this_host_is_taken_over(tmp_path, no_flock, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _leave_record(tmp_path, socket.gethostname(), dead.pid)
    with caplog.at_level(logging.WARNING), lock.RunLock(str(tmp_path)):
        assert json.loads((tmp_path / lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "cannot lock" in caplog.text and "no longer runs" in caplog.text
