"""Where pending stages run: `local` (here, one after another, each as a subprocess of its
printed command), `print` (one shell line per pending stage, for any scheduler) or `slurm`
(an sbatch array over those lines, one task per cell: `slurm.py`) or `tpu` (as local, but a
training stage runs on a TPU pod through tpu_scripts/launch.sh: `tpu.py`)."""

from __future__ import annotations

import collections
import sys
import time

from easylm_imitate.experiment import commands as C
from easylm_imitate.experiment import markers, processes
from easylm_imitate.experiment.plan import Cell, Stage
from easylm_imitate.experiment.progress import bar
from easylm_imitate.experiment.summaries import render, summarize

LAUNCHERS = ("local", "print", "slurm", "tpu")
NOT_BUILT: dict[str, str] = {}
Outcome = collections.namedtuple("Outcome", "executed failed blocked skipped")


def check_launcher(name: str) -> None:
    """ValueError for a launcher that does not exist or is not built yet."""
    if name in NOT_BUILT:
        raise ValueError(f"--launcher={name} ({NOT_BUILT[name]}) is not built yet; use --launcher=slurm, or "
                         "--launcher=print and hand the printed lines to your scheduler (stages of a cell in order), "
                         "or --launcher=local")
    if name not in LAUNCHERS:
        raise ValueError(f"--launcher must be one of {', '.join(LAUNCHERS)}, not {name!r}")


def statuses(cells: list[Cell]) -> dict[str, str]:
    """Stage id -> done | pending | partial | stale. A stage downstream of a changed one is
    stale too: its fingerprint includes the upstream fingerprints."""
    return {s.id: markers.status(s.out_dir, s.fingerprint) for cell in cells for s in cell.stages}


def pending(cells: list[Cell]) -> list[Stage]:
    """Stages that are not done, in run order."""
    state = statuses(cells)
    return [s for cell in cells for s in cell.stages if state[s.id] != markers.DONE]


def stage_line(stage: Stage) -> str:
    """One shell line that runs a stage and keeps its markers: begin && command && end."""
    mark = [sys.executable, "-m", "easylm_imitate.experiment.markers"]
    common = [C.flag("stage_dir", stage.out_dir), C.flag("fingerprint", stage.fingerprint)]
    return " && ".join([C.shell_line(mark + ["begin", *common]), C.shell_line(stage.command),
                        C.shell_line(mark + ["end", *common, C.flag("kind", stage.kind)])])


def run_print(cells: list[Cell], out=sys.stdout) -> int:
    """Print one line per pending stage (stages of a cell in order); returns how many."""
    todo = pending(cells)
    for stage in todo:
        print(stage_line(stage), file=out)
    return len(todo)


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def run_local(cells: list[Cell], log, execute=None) -> Outcome:
    """Run every pending stage here, in order, each as a subprocess of its command (output in
    `<stage>.log` beside it). A failed stage blocks its dependents; other cells go on.
    `execute(stage)` may return a function `(log_file) -> exit status` that runs the stage
    elsewhere instead (None: here)."""
    todo = pending(cells)
    total, executed, failed, blocked = len(todo), 0, [], []
    skipped = sum(len(c.stages) for c in cells) - total
    bad: set[str] = set()
    log(f"plan: {sum(len(c.stages) for c in cells)} stages in {len(cells)} cells; {skipped} done, {total} to run")
    for i, stage in enumerate(todo, 1):
        if any(d in bad for d in stage.deps):
            bad.add(stage.id)
            blocked.append(stage.id)
            log(f"{bar(i, total)} blocked {stage.id} (an upstream stage failed)")
            continue
        run_elsewhere = execute(stage) if execute else None
        if stage.kind == "train" and run_elsewhere is None:
            # a trainer left by a killed runner stops on SIGTERM; let it finish saving
            from easylm_imitate.train.run_lock import lock_path

            processes.wait_for_free(lock_path(stage.out_dir), log=log)
        state = markers.status(stage.out_dir, stage.fingerprint)
        resumed = " (resuming)" if state == markers.PARTIAL and stage.resumable else ""
        wiped = markers.begin(stage.out_dir, stage.fingerprint)
        log_path = f"{stage.out_dir}.log"
        extra = f", tokens {stage.tokens}" if stage.tokens else ""
        log(f"{bar(i - 1, total)} start {stage.id}{resumed}{' (old outputs removed: stale)' if wiped else ''}"
            f"{extra}; log {log_path}")
        start = time.time()
        with open(log_path, "a", encoding="utf-8") as out:
            out.write(f"$ {C.shell_line(stage.command)}\n")
            out.flush()
            code = run_elsewhere(out) if run_elsewhere else processes.run_command(stage.command, out)
        seconds = time.time() - start
        executed += 1
        if code != 0:
            bad.add(stage.id)
            failed.append(stage.id)
            log(f"{bar(i, total)} FAILED {stage.id} (exit {code}) after {seconds:.1f}s; last lines of {log_path}:\n"
                + _tail(log_path))
            continue
        summary = summarize(stage.kind, stage.out_dir)
        markers.end(stage.out_dir, stage.fingerprint, summary, seconds)
        log(f"{bar(i, total)} done {stage.id} in {seconds:.1f}s {render(summary)}".rstrip())
    log(f"finished: {executed} executed ({len(failed)} failed), {len(blocked)} blocked, {skipped} already done")
    return Outcome(executed, failed, blocked, skipped)
