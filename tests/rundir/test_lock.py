"""One process per run dir: real processes hold and lose the lock; the lock-file fallback for filesystems without
POSIX locks judges its holder by host, pid and SLURM job."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spanqa.errors import OutputError
from spanqa.rundir import lock as run_lock
from spanqa.rundir.lock import RunLock, holder_identity
from tests.helpers import subprocess_env

HOLD = "import sys, time\nfrom pathlib import Path\nfrom spanqa.rundir.lock import RunLock\n" \
       "with RunLock.held(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(60)\n"  # fmt: skip


def holder(run_dir: Path) -> subprocess.Popen[str]:
    """Another process that takes the run dir's lock and keeps it for a minute."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], env=subprocess_env(), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_second_process_is_refused_naming_the_holder(tmp_path: Path) -> None:
    proc = holder(tmp_path)
    try:
        with pytest.raises(OutputError) as err, RunLock.held(tmp_path):
            pass
        assert str(err.value).startswith(
            f"run dir {str(tmp_path)!r} is in use by pid {proc.pid} on {socket.gethostname()}, started "
        )
        assert "\n" not in str(err.value)
    finally:
        proc.terminate()
        proc.wait()


def test_a_killed_holders_lock_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proc = holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / ".lock").is_file()  # left behind, but no longer locked
    with RunLock.held(tmp_path) as lock:
        assert lock.took_over is not None and lock.took_over["pid"] == proc.pid
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert f"was left by pid {proc.pid} on {socket.gethostname()}" in caplog.text
    assert not (tmp_path / ".lock").exists()  # released: removed


def test_a_released_lock_leaves_nothing_and_can_be_taken_again(tmp_path: Path) -> None:
    with RunLock.held(tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []
    with RunLock.held(tmp_path) as lock:
        assert lock.took_over is None


# ------------------------------------------------------------------------------------ without POSIX locks
@pytest.fixture
def no_posix_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem that refuses POSIX locks (Lustre without `flock`): the one thing not reproducible here."""

    def refuse(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", refuse)


def write_lock(run_dir: Path, **holder: object) -> None:
    (run_dir / ".lock").write_text(json.dumps({**holder_identity(), **holder}))


def test_without_posix_locks_a_live_holder_on_this_host_is_refused(tmp_path: Path, no_posix_locks: None) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, pid=sleeper.pid, process_start=run_lock._process_start(sleeper.pid))
        with pytest.raises(OutputError, match=rf"in use by pid {sleeper.pid} .*judged by its lock file"):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    # Gone now: the same lock file is stale.
    with RunLock.held(tmp_path) as lock:
        assert lock.took_over is not None and lock.took_over["pid"] == sleeper.pid


def test_without_posix_locks_a_reused_pid_is_not_the_holder(tmp_path: Path, no_posix_locks: None) -> None:
    """The pid runs, but it is another process than the one that wrote the lock (its start time differs)."""
    write_lock(tmp_path, pid=1, process_start="0")
    with RunLock.held(tmp_path) as lock:
        assert lock.took_over is not None and lock.took_over["pid"] == 1


def test_without_posix_locks_another_hosts_holder_is_trusted_unless_it_is_this_slurm_job(
    tmp_path: Path, no_posix_locks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_lock(tmp_path, host="node-17", pid=4242, slurm_job="991.0")
    with pytest.raises(OutputError, match=r"in use by pid 4242 on node-17.*delete .*\.lock"):
        RunLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "991")  # the same job, requeued onto another node
    monkeypatch.setenv("SLURM_PROCID", "0")
    with RunLock.held(tmp_path) as lock:
        assert lock.took_over is not None and lock.took_over["host"] == "node-17"


def test_holder_identity_names_this_process() -> None:
    me = holder_identity()
    assert (me["host"], me["pid"]) == (socket.gethostname(), os.getpid())
    assert me["process_start"] == run_lock._process_start(os.getpid())
    assert time.strptime(me["started"], "%Y-%m-%d %H:%M:%S %z")
