"""Run a model-imitation study: every cell (base model x imitation data x seed) through its
stages (data subset, train, one stage per evaluation, results), skipping what is done.

    python -m easylm_imitate.experiment --config=configs/experiments/false_promise.py --workdir=DIR
    python -m easylm_imitate.experiment --config=... --workdir=DIR --dry_run        # the plan only
    python -m easylm_imitate.experiment --config=... --workdir=DIR --launcher=print # shell lines

Rerunning the same command continues where it stopped: finished stages (same fingerprint)
are skipped, a half-finished training run resumes from its checkpoint, and a stage whose
settings changed (e.g. --config.cells.CELL.train.learning_rate=1e-3) re-runs with what
depends on it. Launchers: local (default; stages in sequence here, each a subprocess of its
printed command) and print (one line per pending stage). slurm and tpu launchers are not
built yet. See docs/experiment.md.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from easylm_imitate.experiment import launchers, processes
from easylm_imitate.experiment.fingerprint import ContentHashes
from easylm_imitate.experiment.plan import build_plan
from easylm_imitate.experiment.plan_view import render_plan
from easylm_imitate.experiment.progress import ProgressLog
from easylm_imitate.fileio import write_json_atomic

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/experiments/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory: cells/<cell>/<stage>/, markers, "
                               "experiment.log.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan (every cell and stage, status, tokens, command) "
                             "and run nothing; needs no data or model.")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", launchers.LAUNCHERS, "local: run pending stages here in "
                              "sequence; print: one shell line per pending stage; slurm, tpu: not built yet.")
flags.mark_flags_as_required(["config", "workdir"])

HASH_CACHE = ".content_hashes.json"


def run(config, workdir: str, dry_run: bool = False, launcher: str = "local", out=sys.stdout) -> int:
    """Plan the experiment and run (or print) it; returns the exit status."""
    launchers.check_launcher(launcher)
    workdir = os.path.abspath(workdir)
    hashes = ContentHashes(os.path.join(workdir, HASH_CACHE))
    cells = build_plan(config, workdir, hashes)
    if dry_run:
        print(render_plan(cells), file=out)
        return 0
    if launcher == "print":
        launchers.run_print(cells, out)
        return 0
    lock = processes.hold_experiment(workdir)  # noqa: F841 (held until this process exits)
    hashes.save()
    write_json_atomic(os.path.join(workdir, "experiment_config.json"), config.to_dict())
    log = ProgressLog(os.path.join(workdir, "experiment.log"), out)
    log(f"experiment {config.name}: {len(cells)} cells -> {workdir}")
    outcome = launchers.run_local(cells, log)
    return 1 if outcome.failed or outcome.blocked else 0


def main(argv) -> None:
    """Binary entry: bad configs and launchers are one `error:` line, exit 1."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        code = run(_CONFIG.value, _WORKDIR.value, _DRY_RUN.value, _LAUNCHER.value)
    except (ValueError, processes.RunnerBusy) as e:
        raise SystemExit(f"error: {e}") from None
    raise SystemExit(code)


def entry() -> None:
    """Console entry point."""
    app.run(main)


if __name__ == "__main__":
    entry()
