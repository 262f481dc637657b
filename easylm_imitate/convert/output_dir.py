"""Where converters write: never over existing output, staged in a hidden directory beside it
that only becomes the output when complete, and stale staging directories (left by a
conversion that was killed) cleared on the next run.

A staging directory is `.<name>.partial-<pid>-<random>` next to the output `<name>`. Its
owner holds an exclusive `flock` on it for the whole conversion, so a lock that can be taken
means the owner is gone: the kernel drops a dead process's locks.
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
    staging directory is removed, and if the process is killed the next run removes it."""
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
        check_out(out)
        if os.path.isdir(out):
            os.rmdir(out)  # empty, checked above
        os.replace(staging, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if fd is not None:
            os.close(fd)
