"""What the converter binaries share: their `main` and `run`, and error handling (one line on
stderr and exit status 1)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from absl import app, flags

from easylm_imitate.checkpoint import CheckpointError
from easylm_imitate.cli_logging import quiet_logs_by_default
from easylm_imitate.convert.hf_config import ConversionError


def run_or_exit(fn, *args, **kwargs):
    """Call `fn`; on bad input print `error: ...` (one line) and exit 1. Prints the result path."""
    try:
        result = fn(*args, **kwargs)
    except (ConversionError, CheckpointError, OSError) as e:  # OSError: unreadable input, unwritable output
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        sys.exit(1)
    print(result)
    return result


def converter(convert: Callable[[flags.FlagValues], object], required: Sequence[str]):
    """`(main, run)` of a converter binary whose flags are defined: marks `required` as
    required and returns the absl `main`, which refuses positional arguments, quiets logs
    (see quiet_logs_by_default) and calls `convert(FLAGS)` through run_or_exit, and the
    console entry point `run`."""
    flags.mark_flags_as_required(list(required))

    def main(argv):
        """Refuse positional arguments, then convert as the flags say."""
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        quiet_logs_by_default()
        run_or_exit(convert, flags.FLAGS)

    def run():
        """Console entry point."""
        app.run(main)

    return main, run
