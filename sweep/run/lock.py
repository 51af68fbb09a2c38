"""One driver per run dir: ``RunDirLock`` holds an exclusive ``flock`` on ``run_dir/.lock`` for the
driver's whole life. The lock belongs to an open file, so the OS frees it when the driver ends in any
way (SIGKILL included): a dead driver never leaves a stale lock behind, and no PID is trusted to say
whether the holder lives."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from sweep.errors import SpecError
from sweep.run_dir import LOCK_FILE


class RunDirLock:
    """The exclusive lock on a run dir; ``acquire`` (or ``with``) raises SpecError when another process
    holds it. Not re-entrant: a second lock on the same dir conflicts even in the same process."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunDirLock:
        """Take the lock without waiting; SpecError naming the holder's PID when another process has it."""
        holder = self.try_acquire()
        if holder is not None:
            pid = f" (pid {holder})" if holder else ""
            raise SpecError(
                [f"run_dir: '{self.run_dir}' is in use by another sweep{pid}; wait for it to end, or stop it first"]
            )
        return self

    def try_acquire(self) -> int | None:
        """Take the lock without waiting: None when taken, else the holder's PID (0 when it has not
        written it yet). SpecError when the dir cannot hold a lock (no such dir, no permission, a file
        system without locks)."""
        assert self._fd is None, "RunDirLock is not re-entrant"
        try:
            # (os.open makes a descriptor that no child process inherits: Ray's and the data check's
            # processes never keep the lock alive after the driver)
            fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise SpecError([f"run_dir: cannot lock '{self.run_dir}' ({exc.strerror})"]) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            return holder
        except OSError as exc:
            os.close(fd)
            raise SpecError([f"run_dir: cannot lock '{self.run_dir}' ({exc.strerror})"]) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        # the holder's PID, only for the message a second driver prints (the flock is the lock): best
        # effort, so a full disk does not stop a driver that holds the lock already
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return None

    def release(self) -> None:
        """Free the lock (closing the file frees it; the file stays, emptied, for the next driver)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                with contextlib.suppress(OSError):  # no stale PID for a reader while the next holder starts
                    os.ftruncate(fd, 0)
            finally:
                os.close(fd)

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0
