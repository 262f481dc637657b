"""How the binaries log: quiet by default, `--verbosity` to see library INFO lines.

Orbax logs every file it writes, and httpx every HTTP request, at INFO; under absl's
`app.run` those lines would interleave with the progress bars. Every binary calls
`quiet_logs_by_default()` once its flags are parsed. The trainer also keeps the tracebacks
Orbax's writer threads log on a failed save off the console (`library_tracebacks_to`).
"""

from __future__ import annotations

import logging
import os

from absl import flags
from absl import logging as absl_logging


def quiet_logs_by_default() -> None:
    """Log at WARNING (absl and Python logging alike) unless --verbosity was given;
    --verbosity=0 shows INFO. Call after flags are parsed (in `main`)."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)


class _LibraryTracebacks(logging.Filter):
    """Moves ERROR records that carry a traceback from the named libraries (and asyncio's
    reports of never-retrieved task errors) off the console into `path` (appended; a write that fails, e.g. on a full disk, is dropped silently)."""

    def __init__(self, libraries: tuple[str, ...], path: str):
        super().__init__()
        self._parts = tuple(f"{os.sep}{name}{os.sep}" for name in libraries)
        self._file = _QuietFileHandler(path)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        # asyncio's "Task exception was never retrieved": the writes an aborted save left behind,
        # collected at exit after our own error line.
        if record.name != "asyncio" and not any(p in record.pathname for p in self._parts):
            return True
        if record.exc_info or record.exc_text:
            self._file.handle(record)
            return False
        return True


class _QuietFileHandler(logging.FileHandler):
    """A FileHandler opened on first use that never prints "--- Logging error ---"."""

    def __init__(self, path: str):
        super().__init__(path, delay=True)

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def library_tracebacks_to(path: str, libraries: tuple[str, ...] = ("orbax", "tensorstore")) -> None:
    """Send the tracebacks Orbax's threads log when a save fails to `path` instead of the
    console, where our own one-line `error: ...` names the step and the cause (a full disk
    otherwise buries it under hundreds of lines, not always last). With --verbosity the
    console keeps them."""
    if flags.FLAGS["verbosity"].present:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    absl_logging.get_absl_handler().addFilter(_LibraryTracebacks(libraries, path))

