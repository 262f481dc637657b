"""`--launcher=slurm`: one sbatch array over the cells that have pending stages.

Array task i runs cell i's pending stages in order, each through the very line
`--launcher=print` prints (`markers begin && <command> && markers end`), so markers and
fingerprints behave as with any other launcher; a failed stage ends its task (its
dependents do not run), other cells go on. The script follows the GPU recipes of
`tpu_scripts/gpu/`: it sources `xla_env.sh`, runs from the checkout (`$EASYLM_REPO`, else
the one that wrote it), and asks SLURM for SIGTERM 5 minutes before the time limit, which
it passes to the running stage (a trainer saves a checkpoint; resubmitting resumes it).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass

from easylm_imitate.experiment.launchers import pending, stage_line
from easylm_imitate.experiment.plan import Cell
from easylm_imitate.experiment.spec import REPO


@dataclass(frozen=True)
class SlurmOptions:
    """Per-task resources: one node with `gpus` GPUs (one process drives them all, as in
    tpu_scripts/gpu/single_node.sh), `cpus` CPUs (0: 8 per GPU, at least 8), wall `time`,
    an optional `partition`, and at most `max_parallel` tasks at once (0: no limit)."""

    partition: str = ""
    gpus: int = 8
    cpus: int = 0
    time: str = "48:00:00"
    max_parallel: int = 0

    def check(self) -> None:
        """ValueError naming the flag whose value SLURM would reject."""
        if self.gpus < 0:
            raise ValueError(f"--slurm_gpus must be >= 0, not {self.gpus}")
        if self.cpus < 0:
            raise ValueError(f"--slurm_cpus must be >= 0, not {self.cpus}")
        if self.max_parallel < 0:
            raise ValueError(f"--slurm_max_parallel must be >= 0, not {self.max_parallel}")
        if not re.fullmatch(r"(\d+-)?\d+(:\d+){0,2}", self.time):
            raise ValueError(f"--slurm_time must be SLURM's [D-]HH:MM:SS (or MM, MM:SS), not {self.time!r}")
        if self.partition and not re.fullmatch(r"[\w.,-]+", self.partition):
            raise ValueError(f"--slurm_partition is not a partition name: {self.partition!r}")


def script_path(workdir: str, name: str) -> str:
    """Where the array script of experiment `name` is written: DIR/slurm/<name>.sbatch."""
    return os.path.join(workdir, "slurm", f"{name}.sbatch")


_PRELUDE = """set -euo pipefail
# sbatch runs a copy of this file: find the checkout as tpu_scripts/gpu/slurm.sbatch does.
repo="${{EASYLM_REPO:-{repo}}}"
if [[ ! -f "$repo/tpu_scripts/gpu/xla_env.sh" ]]; then
  echo "error: $repo is not an easylm_imitate checkout; set EASYLM_REPO" >&2
  exit 1
fi
# shellcheck source=/dev/null
source "$repo/tpu_scripts/gpu/xla_env.sh"
cd "$repo"

# SLURM's SIGTERM (--signal=B:TERM@300) goes to this shell; pass it to the running stage.
child=""
trap 'echo "$(date -u +%FT%TZ) SIGTERM: stopping the running stage" >&2;
      [[ -n "$child" ]] && kill -TERM -- "-$child" 2>/dev/null; wait; exit 143' TERM

# stage ID LINE: run one stage's printed line in its own process group; stop the task if it fails.
stage() {{
  echo "$(date -u +%FT%TZ) start $1"
  setsid bash -c "$2" &
  child=$!
  local code=0
  wait "$child" || code=$?
  child=""
  if [[ $code -ne 0 ]]; then
    echo "$(date -u +%FT%TZ) FAILED $1 (exit $code); later stages of this cell do not run" >&2
    exit "$code"
  fi
  echo "$(date -u +%FT%TZ) done $1"
}}
"""


def render_script(cells: list[Cell], workdir: str, name: str, options: SlurmOptions) -> tuple[str, int]:
    """The sbatch array script over the cells with pending stages, and how many tasks it has."""
    todo = pending(cells)
    order = [c.name for c in cells if any(s.cell == c.name for s in todo)]
    cpus = options.cpus or max(8, 8 * options.gpus)
    array = f"0-{len(order) - 1}" + (f"%{options.max_parallel}" if options.max_parallel else "")
    sbatch = [f"--job-name=easylm-{name}", f"--array={array}", "--nodes=1", "--ntasks=1",
              f"--cpus-per-task={cpus}", f"--time={options.time}",
              f"--output={os.path.join(workdir, 'slurm', '%x-%A_%a.out')}",
              "--signal=B:TERM@300"]
    if options.gpus:
        sbatch.insert(4, f"--gpus-per-node={options.gpus}")
    if options.partition:
        sbatch.insert(2, f"--partition={options.partition}")
    lines = ["#!/usr/bin/env bash",
             f"# Experiment {name}: {len(order)} cells with pending stages ({len(todo)} stages), one array",
             f"# task per cell. Written by python -m easylm_imitate.experiment --launcher=slurm --workdir={workdir}",
             "# Submit: sbatch THIS_FILE. Rerun the runner afterwards (or --dry_run) to see what is done.",
             *(f"#SBATCH {s}" for s in sbatch), _PRELUDE.format(repo=REPO),
             'case "${SLURM_ARRAY_TASK_ID:?run this script with sbatch (an array task)}" in']
    for i, cell in enumerate(order):
        lines.append(f"  {i})  # {cell}")
        lines += [f"    stage {shlex.quote(s.id)} {shlex.quote(stage_line(s))}" for s in todo if s.cell == cell]
        lines.append("    ;;")
    lines += ['  *) echo "error: no cell for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;', "esac", ""]
    return "\n".join(lines), len(order)


def write_script(cells: list[Cell], workdir: str, name: str, options: SlurmOptions) -> tuple[str | None, int]:
    """Write the array script (DIR/slurm/<name>.sbatch); (None, 0) when nothing is pending."""
    options.check()
    text, tasks = render_script(cells, workdir, name, options) if pending(cells) else ("", 0)
    if not tasks:
        return None, 0
    path = script_path(workdir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return path, tasks


def submit(path: str) -> str:
    """`sbatch PATH`; returns sbatch's output (the job id). ValueError when sbatch is missing or fails."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise ValueError(f"sbatch is not on PATH (no SLURM here); the array script is {path}: submit it from a "
                         "SLURM login node, or use --dry_run to only write it")
    r = subprocess.run([sbatch, path], capture_output=True, text=True)
    if r.returncode != 0:
        raise ValueError(f"sbatch {path} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()}")
    return r.stdout.strip()
