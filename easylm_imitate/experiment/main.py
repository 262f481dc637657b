"""Run a model-imitation study: every cell (base model x imitation data x seed) through its
stages (data subset, train, one stage per evaluation, results), skipping what is done.

    python -m easylm_imitate.experiment --config=configs/experiments/false_promise.py --workdir=DIR
    python -m easylm_imitate.experiment --config=... --workdir=DIR --dry_run        # the plan only
    python -m easylm_imitate.experiment --config=... --workdir=DIR --launcher=print # shell lines

Rerunning the same command continues where it stopped: finished stages (same fingerprint)
are skipped, a half-finished training run resumes from its checkpoint, and a stage whose
settings changed (e.g. --config.cells.CELL.train.learning_rate=1e-3) re-runs with what
depends on it. Launchers: local (default; stages in sequence here, each a subprocess of its
printed command), print (one line per pending stage) and slurm (writes DIR/slurm/NAME.sbatch,
an array with one task per cell running that cell's printed lines, and submits it with
sbatch; with --dry_run it only writes it) and tpu (as local, but training stages run on a TPU
pod through tpu_scripts/launch.sh; with --dry_run it prints the launch.sh and local lines).
See docs/experiment.md.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from easylm_imitate.experiment import launchers, processes, slurm, tpu
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
                             "and run nothing; needs no data or model. With --launcher=slurm: write the sbatch "
                             "script, print its path, submit nothing.")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", launchers.LAUNCHERS, "local: run pending stages here in "
                              "sequence; print: one shell line per pending stage; slurm: an sbatch array, one task per "
                              "cell with pending stages (DIR/slurm/NAME.sbatch; --dry_run writes it without "
                              "submitting); tpu: as local, but training stages run on a TPU pod through "
                              "tpu_scripts/launch.sh (--dry_run prints the lines).")
_PARTITION = flags.DEFINE_string("slurm_partition", "", "--launcher=slurm: SLURM partition (default: the cluster's).")
_GPUS = flags.DEFINE_integer("slurm_gpus", 8, "--launcher=slurm: GPUs per array task (one node; one process drives "
                             "them all).")
_CPUS = flags.DEFINE_integer("slurm_cpus", 0, "--launcher=slurm: CPUs per array task (0: 8 per GPU).")
_TIME = flags.DEFINE_string("slurm_time", "48:00:00", "--launcher=slurm: time limit per array task (a cell's pending "
                            "stages); SIGTERM 5 minutes before it makes the trainer save, and resubmitting resumes.")
_MAX_PARALLEL = flags.DEFINE_integer("slurm_max_parallel", 0, "--launcher=slurm: at most this many cells at once "
                                     "(--array=0-N%K; 0: no limit).")
_TPU_NAME = flags.DEFINE_string("tpu_name", "", "--launcher=tpu: the pod (TPU_NAME; default: from the env file).")
_TPU_ZONE = flags.DEFINE_string("tpu_zone", "", "--launcher=tpu: its zone (TPU_ZONE; default: from the env file).")
_TPU_PROJECT = flags.DEFINE_string("tpu_project", "", "--launcher=tpu: its project (TPU_PROJECT; default: from the "
                                   "env file).")
_TPU_ENV = flags.DEFINE_string("tpu_env", "", "--launcher=tpu: tpu_scripts env file (default: $TPU_ENV, else "
                               "tpu_scripts/tpu.env).")
_TPU_POLL = flags.DEFINE_float("tpu_poll_seconds", 60, "--launcher=tpu: how often to ask worker 0 (check.sh) "
                               "whether training has ended.")
flags.mark_flags_as_required(["config", "workdir"])

HASH_CACHE = ".content_hashes.json"


def run_slurm(cells, workdir: str, name: str, dry_run: bool, options: slurm.SlurmOptions, out=sys.stdout) -> int:
    """Write the array script over the cells with pending stages and, unless `dry_run`, submit it."""
    path, tasks = slurm.write_script(cells, workdir, name, options)
    if path is None:
        print("nothing pending: every stage is done", file=out)
        return 0
    if dry_run:
        print(path, file=out)
        return 0
    print(f"submitted {path} ({tasks} array tasks): {slurm.submit(path)}", file=out)
    return 0


def run(config, workdir: str, dry_run: bool = False, launcher: str = "local", out=sys.stdout,
        slurm_options: slurm.SlurmOptions | None = None, tpu_options: tpu.TpuOptions | None = None) -> int:
    """Plan the experiment and run (or print, or submit) it; returns the exit status."""
    launchers.check_launcher(launcher)
    workdir = os.path.abspath(workdir)
    hashes = ContentHashes(os.path.join(workdir, HASH_CACHE))
    cells = build_plan(config, workdir, hashes)
    if launcher == "slurm":
        return run_slurm(cells, workdir, config.name, dry_run, slurm_options or slurm.SlurmOptions(), out)
    tpu_options = tpu_options or tpu.TpuOptions()
    if launcher == "tpu":
        tpu_options.check()
    if dry_run and launcher == "tpu":
        tpu.print_plan(cells, tpu_options, out)
        return 0
    if dry_run:
        print(render_plan(cells), file=out)
        return 0
    if launcher == "print":
        launchers.run_print(cells, out)
        return 0
    if launcher == "tpu":
        tpu.require_gcloud()
    lock = processes.hold_experiment(workdir)  # noqa: F841 (held until this process exits)
    hashes.save()
    write_json_atomic(os.path.join(workdir, "experiment_config.json"), config.to_dict())
    log = ProgressLog(os.path.join(workdir, "experiment.log"), out)
    log(f"experiment {config.name}: {len(cells)} cells -> {workdir}")
    outcome = launchers.run_local(cells, log, tpu.executor(tpu_options) if launcher == "tpu" else None)
    return 1 if outcome.failed or outcome.blocked else 0


def main(argv) -> None:
    """Binary entry: bad configs and launchers are one `error:` line, exit 1."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        options = slurm.SlurmOptions(_PARTITION.value, _GPUS.value, _CPUS.value, _TIME.value, _MAX_PARALLEL.value)
        pod = tpu.TpuOptions(_TPU_NAME.value, _TPU_ZONE.value, _TPU_PROJECT.value, _TPU_ENV.value, _TPU_POLL.value)
        code = run(_CONFIG.value, _WORKDIR.value, _DRY_RUN.value, _LAUNCHER.value, slurm_options=options,
                   tpu_options=pod)
    except (ValueError, processes.RunnerBusy) as e:
        raise SystemExit(f"error: {e}") from None
    raise SystemExit(code)


def entry() -> None:
    """Console entry point."""
    app.run(main)


if __name__ == "__main__":
    entry()
