"""Fine-tune a model on canonical conversation JSONL; rerunning the same command resumes from
the run's latest checkpoint.

    python -m easylm_imitate.train --config=configs/FILE.py --workdir=DIR [--config.key=value ...]
    easylm-train --config=configs/FILE.py --workdir=DIR

Library INFO logs (Orbax writes one per file) are hidden unless --verbosity is given; a bad
run prints one `error: ...` line (the tracebacks Orbax's threads log when a save fails go to
WORKDIR/library_errors.log).
"""

import os

from absl import app, flags
from ml_collections import config_flags

from easylm_imitate.cli_logging import library_tracebacks_to, quiet_logs_by_default

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, TensorBoard, config "
                                "(required unless --compile_only).")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Only compile the train step for the configured mesh and "
                                   "print the per-device memory plan (no data, no training).")
_TOPOLOGY = flags.DEFINE_string("compile_topology", "", "With --compile_only: a TPU slice to compile for without "
                                "having it, e.g. v4-32, v5e-16, v5p-8 (needs the [tpu] extra).")
flags.mark_flags_as_required(["config"])


def main(argv):
    """Train with the parsed config."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    quiet_logs_by_default()
    if _COMPILE_ONLY.value:
        from easylm_imitate.train.memory_plan import plan

        try:
            report = plan(_CONFIG.value, _TOPOLOGY.value)
        except (ValueError, RuntimeError) as e:
            raise SystemExit(f"error: {e}") from None
        print(report.render())
        raise SystemExit(0 if report.fits is not False else 2)
    if _TOPOLOGY.value:
        raise app.UsageError("--compile_topology needs --compile_only")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required for training")
    from easylm_imitate.model_names import NameResolutionError
    from easylm_imitate.train.trainer import RUN_ERRORS, train

    library_tracebacks_to(os.path.join(_WORKDIR.value, "library_errors.log"))
    try:
        result = train(_CONFIG.value, _WORKDIR.value)
    except (*RUN_ERRORS, NameResolutionError) as e:  # says what and where: one line, no traceback
        raise SystemExit(f"error: {e}") from None
    if result.interrupted:
        raise SystemExit(143)


def run():
    """Console entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
