"""One process per run dir: `<run>/.lock`, held for the run's lifetime.

Two runs writing one run dir interleave their checkpoints, records and model/ and both exit 0. So a run takes
the lock before it decides anything about the dir, and a second run into a locked dir stops at once with one line
naming the holder (host, pid, start time).

How it holds: an exclusive POSIX record lock (`fcntl.lockf`) on the lock file, plus the holder's identity written
in it. The kernel drops a POSIX lock when its process dies however it dies, so a crashed or killed run leaves a lock
file that is no longer locked: the next run takes it over (and says so) and can resume. POSIX locks work across
machines on NFSv3 (through lockd) and NFSv4 (in the protocol; a dead client's locks are freed when its lease
expires, 90 s by default), on GPFS and on Lustre mounted with `flock`. Where the filesystem refuses them
(ENOLCK, EOPNOTSUPP: Lustre without `flock`, some FUSE mounts) the file's existence is the lock and its holder is
judged by what it says: on this host, alive while its pid runs (with the same start time); under SLURM, dead when
it names this very job (a requeued job is the same job id, and SLURM ends the old one first); on another host,
trusted until its file is removed, which the error says how to do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spanqa.errors import OutputError
from spanqa.rundir.layout import LOCK

log = logging.getLogger(__name__)
_NO_POSIX_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_HELD = {errno.EAGAIN, errno.EACCES}


def _process_start(pid: int) -> str | None:
    """The start time of a process on this host, in clock ticks since boot (Linux), to tell a pid reused by
    another process from the holder itself."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _slurm_job() -> str | None:
    job = os.environ.get("SLURM_JOB_ID")
    return f"{job}.{os.environ.get('SLURM_PROCID', '0')}" if job else None


def holder_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "process_start": _process_start(pid),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "slurm_job": _slurm_job(),
    }


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "a process that has not written its name yet"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder named in a lock file may still run (used where POSIX locks are unavailable)."""
    if holder.get("slurm_job") and holder["slurm_job"] == _slurm_job():
        return False  # this SLURM job, requeued: its earlier run was ended before this one started
    if holder.get("host") != socket.gethostname():
        return True  # cannot be checked from here
    pid = int(holder.get("pid", -1))
    if pid == os.getpid():
        return False
    start = _process_start(pid)
    if start is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir()  # no /proc: a live pid is all that can be known
    return holder.get("process_start") in (None, start)


class RunLock:
    """The lock on one run dir. `RunLock.held(run_dir)` acquires it (or raises OutputError naming the holder) and
    releases it, removing the file, when the block ends."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.fd: int | None = None
        self.took_over: dict[str, Any] | None = None  # the dead holder whose lock this one replaced

    @classmethod
    @contextlib.contextmanager
    def held(cls, run_dir: Path) -> Iterator[RunLock]:
        lock = cls(run_dir)
        lock.acquire()
        try:
            yield lock
        finally:
            lock.release()

    def _read_holder(self, fd: int | None = None) -> dict[str, Any] | None:
        """The holder a lock file names. Through `fd` once this process holds the lock: closing any other
        descriptor of the file would release a POSIX lock."""
        try:
            text = os.pread(fd, 4096, 0).decode() if fd is not None else self.path.read_text()
            blob = json.loads(text or "null")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return blob if isinstance(blob, dict) else None

    def _refuse(self, holder: dict[str, Any] | None, how: str = "") -> OutputError:
        return OutputError(
            f"run dir {str(self.path.parent)!r} is in use by {describe(holder)}{how}: wait for it to end or choose "
            f"another hydra.run.dir (if that process is gone, delete {self.path})"
        )

    def _open(self) -> tuple[int | None, bool]:
        """(descriptor, created): the lock file, created if absent; None when it vanished in between."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                return os.open(self.path, os.O_RDWR), False
            except FileNotFoundError:
                return None, False
        except OSError as err:
            raise OutputError(f"cannot create the run lock {self.path} ({err.strerror})") from None

    @staticmethod
    def _lock(fd: int) -> str:
        """'locked', 'held' (by a live process) or 'unsupported' (no POSIX locks on this filesystem)."""
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in _HELD:
                return "held"
            if err.errno in _NO_POSIX_LOCKS:
                return "unsupported"
            raise OutputError(f"cannot lock the run dir ({err.strerror})") from None
        return "locked"

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # the file vanished or was replaced between open and lock: try again
            fd, created = self._open()
            if fd is None:
                continue
            state = self._lock(fd)
            if state == "held":
                os.close(fd)
                raise self._refuse(self._read_holder())
            earlier = None if created else self._read_holder(fd)
            if state == "unsupported" and not created:
                os.close(fd)
                if earlier is None or _alive(earlier):
                    raise self._refuse(earlier, " (no POSIX locks on this filesystem: judged by its lock file)")
                self.path.unlink(missing_ok=True)
                self.took_over = earlier
                continue
            if not os.path.exists(self.path) or os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                os.close(fd)  # its holder released (removed) it after we opened it
                continue
            self.took_over = self.took_over or earlier  # an unlocked file left behind: its holder has died
            self.fd = fd
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder_identity()).encode(), 0)
            os.fsync(fd)
            if self.took_over is not None:
                log.warning("%s was left by %s, which has ended: taken over", self.path, describe(self.took_over))
            return
        raise self._refuse(self._read_holder())

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked: nobody takes over a file that is about to go
        os.close(self.fd)
        self.fd = None
