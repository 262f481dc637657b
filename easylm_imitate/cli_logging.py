"""How the binaries log: quiet by default, `--verbosity` to see library INFO lines.

Orbax logs every file it writes, and httpx every HTTP request, at INFO; under absl's
`app.run` those lines would interleave with the progress bars. Every binary calls
`quiet_logs_by_default()` once its flags are parsed.
"""

from __future__ import annotations

from absl import flags
from absl import logging as absl_logging


def quiet_logs_by_default() -> None:
    """Log at WARNING (absl and Python logging alike) unless --verbosity was given;
    --verbosity=0 shows INFO. Call after flags are parsed (in `main`)."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
