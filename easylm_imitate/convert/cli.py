"""Shared error handling of the converter binaries: one line on stderr and exit status 1."""

from __future__ import annotations

import sys

from absl import flags

from easylm_imitate.checkpoint import CheckpointError
from easylm_imitate.convert.hf_config import ConversionError


def quiet_logs_by_default() -> None:
    """Default absl verbosity to WARNING (Orbax logs every file at INFO); --verbosity=0 restores it."""
    flags.FLAGS.set_default("verbosity", -1)


def run_or_exit(fn, *args, **kwargs):
    """Call `fn`; on bad input print `error: ...` (one line) and exit 1. Prints the result path."""
    try:
        result = fn(*args, **kwargs)
    except (ConversionError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        sys.exit(1)
    print(result)
    return result
