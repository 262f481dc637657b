"""Where converters write: never over existing output, staged in a hidden directory beside it
that only becomes the output when complete, and stale staging directories (left by a
conversion that was killed) cleared on the next run.

A staging directory is `.<name>.partial-<pid>-<random>` next to the output `<name>`. Its
owner holds an exclusive `flock` on it for the whole conversion, so a lock that can be taken
means the owner is gone: the kernel drops a dead process's locks. On publish, the output's
modes follow the umask (as `mkdir` and `open` would give them: 0755/0644 under umask 022),
whatever the writers used (`mkdtemp`/`mkstemp` make 0700/0600).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile

from easylm_imitate.convert.hf_config import ConversionError


def check_out(out: str) -> None:
    """Refuse to overwrite: `out` must be absent or an empty directory."""
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ConversionError(f"{out}: output already exists and is not an empty directory")


def current_umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it is racy)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(root: str) -> None:
    """Give `root` and everything under it the modes a fresh `mkdir`/`open` would: directories
    (and executable files) 0o777, other files 0o666, less the umask."""
    mask = current_umask()
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            executable = os.stat(path).st_mode & 0o111
            os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def partial_prefix(out: str) -> str:
    """Name prefix of the staging directories of output `out`."""
    return "." + os.path.basename(out) + ".partial-"


def _lock(path: str) -> int | None:
    """An fd holding an exclusive lock on directory `path`, or None if another process holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def clean_stale_partials(out: str) -> list[str]:
    """Remove the staging directories of `out` that no live process holds (the conversions
    that made them died) and return their paths; a running conversion's is kept."""
    parent, prefix, removed = os.path.dirname(out), partial_prefix(out), []
    if not os.path.isdir(parent):
        return removed
    for entry in os.scandir(parent):
        if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = _lock(entry.path)
        except FileNotFoundError:  # removed meanwhile
            continue
        if fd is None:
            continue
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)
        logging.warning("removed %s, left by a conversion to %s that did not finish", entry.path, out)
        removed.append(entry.path)
    return removed


@contextlib.contextmanager
def staged_output(out: str):
    """Yield a path (not yet existing) to build the output at; it becomes `out` only if the
    block succeeds. Stale staging directories of `out` are removed first; on error the
    staging directory is removed, and if the process is killed the next run removes it. The
    published output's modes follow the umask (see apply_umask)."""
    check_out(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    clean_stale_partials(out)
    tmp = tempfile.mkdtemp(prefix=f"{partial_prefix(out)}{os.getpid()}-", dir=parent)
    fd = _lock(tmp)
    try:
        try:  # a cleaner of another run may have taken it between mkdtemp and the lock
            ours = fd is not None and os.path.samestat(os.fstat(fd), os.stat(tmp))
        except FileNotFoundError:
            ours = False
        if not ours:
            raise ConversionError(f"{out}: another conversion to this output is running")
        staging = os.path.join(tmp, os.path.basename(out))
        yield staging
        apply_umask(staging)
        check_out(out)
        if os.path.isdir(out):
            os.rmdir(out)  # empty, checked above
        os.replace(staging, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if fd is not None:
            os.close(fd)
