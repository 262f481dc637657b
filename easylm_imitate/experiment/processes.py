"""Running stage commands safely: children die with the runner, one runner per experiment
directory, and a training stage waits for a previous trainer of its run directory to exit."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time


class RunnerBusy(RuntimeError):
    """Another runner holds the experiment directory."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the runner dies (a trainer saves and stops)


def run_command(argv: list[str], log_file) -> int:
    """Run `argv` with stdout and stderr to `log_file`; the child gets SIGTERM if this process
    dies (even by kill -9), so no stage outlives its runner. Returns the exit status."""
    return subprocess.call(argv, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def hold_experiment(workdir: str):
    """Take the experiment directory's lock for this process (kept until it exits); RunnerBusy
    when another runner holds it. Returns the open lock file."""
    os.makedirs(workdir, exist_ok=True)
    f = open(os.path.join(workdir, ".runner.lock"), "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunnerBusy(f"another experiment runner is working in {workdir}; wait for it or stop it") from None
    return f


def wait_for_free(lock_file: str, timeout_s: float = 300.0, log=None) -> bool:
    """Wait until nobody holds a flock on `lock_file` (a trainer's run lock); True when free."""
    if not os.path.exists(lock_file):
        return True
    deadline, told = time.monotonic() + timeout_s, False
    while True:
        with open(lock_file, "a+") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                return True
            except BlockingIOError:
                pass
        if time.monotonic() > deadline:
            return False
        if log and not told:
            log(f"waiting for the previous process holding {lock_file} to exit")
            told = True
        time.sleep(0.5)
