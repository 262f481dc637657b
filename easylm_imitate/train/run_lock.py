"""One trainer per run directory: an exclusive `flock` on `WORKDIR/.lock`, held for the run.

Process i of a multi-process run locks `WORKDIR/.lock` (i = 0) or `WORKDIR/.lock.process_i`,
so the processes of one run (on one host or sharing a file system) never block each other,
while a second run on the same directory finds each of those names taken. The kernel drops
a lock when its holder dies, so the lock of a killed trainer is simply taken over. The file
records the holder (pid, host, start time, command) for the message the next one prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time


class RunLockError(RuntimeError):
    """The run directory is in use by another trainer."""


def lock_path(workdir: str, process_index: int = 0) -> str:
    """The lock file of process `process_index` of a run in `workdir`."""
    name = ".lock" if process_index == 0 else f".lock.process_{process_index}"
    return os.path.join(os.path.abspath(workdir), name)


def _holder(fd: int) -> str:
    """Who holds the lock, from what the holder wrote into the file."""
    for _ in range(20):  # the holder writes its record right after locking
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536).decode("utf-8", "replace")
        try:
            info = json.loads(raw)
            return (f"pid {info['pid']} on host {info['host']}, started {info['started']} "
                    f"({' '.join(info.get('argv', []))[:200]})")
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "another process (no holder record)"


class RunLock:
    """Context manager holding the run directory's lock; RunLockError when it is taken."""

    def __init__(self, workdir: str, process_index: int = 0):
        self.path = lock_path(workdir, process_index)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock now or raise RunLockError naming the holder."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLockError(f"{os.path.dirname(self.path)} is in use by another trainer: {holder} "
                               f"(lock {self.path}); wait for it to finish or use another --workdir") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays, empty of meaning once unlocked)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
