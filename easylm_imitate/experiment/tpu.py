"""`--launcher=tpu`: a cell's training stage runs on a TPU pod through `tpu_scripts/launch.sh`;
every other stage (data, evaluations, results) runs here, as with `--launcher=local`.

`launch.sh` copies the checkout to every worker and starts the same training command on all
of them, detached. The runner then asks worker 0 how training is doing through
`tpu_scripts/check.sh --worker=0` every `poll_seconds` until it has exited; exit 0 finishes
the stage (its done marker is written here) and the cell's evaluations run here, reading the
checkpoint. So the experiment directory and every path the cells read (base checkpoints,
builds) must be the same path on the pod's workers and here: e.g. one gcsfuse mount of the
bucket at the same mount point everywhere. A pod trains one run at a time, so training
stages run one after another, in plan order.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass

from easylm_imitate.experiment import commands as C
from easylm_imitate.experiment.launchers import pending, stage_line
from easylm_imitate.experiment.plan import Cell, Stage
from easylm_imitate.experiment.spec import REPO

SCRIPTS = os.path.join(REPO, "tpu_scripts")
UNANSWERED_POLLS = 3  # check.sh failures in a row (ssh blips) before the stage is given up
_STATE = re.compile(r"^=== .*: (running|exited:-?\d+|stopped|none)\b", re.M)


@dataclass(frozen=True)
class TpuOptions:
    """The pod: `name`, `zone`, `project` (each empty: launch.sh reads it from its env file),
    `env_file` (launch.sh --env; empty: $TPU_ENV, else tpu_scripts/tpu.env), and how often to
    ask worker 0 whether training has ended."""

    name: str = ""
    zone: str = ""
    project: str = ""
    env_file: str = ""
    poll_seconds: float = 60.0

    def check(self) -> None:
        """ValueError naming the flag with an unusable value."""
        if self.poll_seconds < 0:
            raise ValueError(f"--tpu_poll_seconds must be >= 0, not {self.poll_seconds}")
        if self.env_file and not os.path.isfile(self.env_file):
            raise ValueError(f"--tpu_env: no such file: {self.env_file}")

    def settings(self) -> dict[str, str]:
        """The TPU_* variables given on the command line (they override the env file)."""
        given = {"TPU_NAME": self.name, "TPU_ZONE": self.zone, "TPU_PROJECT": self.project}
        return {k: v for k, v in given.items() if v}

    def script(self, name: str, *args: str) -> list[str]:
        """argv of `tpu_scripts/<name>.sh [--env FILE] ARGS`."""
        env = [f"--env={self.env_file}"] if self.env_file else []
        return [os.path.join(SCRIPTS, f"{name}.sh"), *env, *args]


def train_settings(stage: Stage) -> dict[str, str]:
    """TRAIN_CONFIG, TRAIN_WORKDIR and TRAIN_ARGS of a training stage's command, as launch.sh
    reads them (the config relative to the checkout it copies to the workers)."""
    args = stage.command[stage.command.index(C.MODULES["train"]) + 1:]
    config = next(a for a in args if a.startswith("--config="))[len("--config="):]
    workdir = next(a for a in args if a.startswith("--workdir="))[len("--workdir="):]
    rest = [a for a in args if not a.startswith(("--config=", "--workdir="))]
    spaced = [a for a in rest if any(ch.isspace() for ch in a)]
    if spaced:  # launch.sh splits TRAIN_ARGS on whitespace
        raise ValueError(f"{stage.id}: a training flag holds whitespace, which tpu_scripts/launch.sh cannot pass: "
                         f"{spaced[0]!r}")
    if os.path.abspath(config).startswith(REPO + os.sep):
        config = os.path.relpath(config, REPO)
    return {"TRAIN_CONFIG": config, "TRAIN_WORKDIR": workdir, "TRAIN_ARGS": " ".join(rest)}


def launch_argv(stage: Stage, options: TpuOptions) -> tuple[dict[str, str], list[str]]:
    """(environment settings, argv) of the launch.sh call that starts a training stage on the pod."""
    return {**options.settings(), **train_settings(stage)}, options.script("launch")


def launch_line(stage: Stage, options: TpuOptions) -> str:
    """The launch.sh call as one shell line: `TPU_NAME=... TRAIN_ARGS='...' tpu_scripts/launch.sh`."""
    env, argv = launch_argv(stage, options)
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), C.shell_line(argv)])


def print_plan(cells: list[Cell], options: TpuOptions, out) -> int:
    """Print, in run order, one launch.sh line per pending training stage and the local line
    (as `--launcher=print` prints it) of every other pending stage; returns how many."""
    todo = pending(cells)
    for stage in todo:
        where = "pod" if stage.kind == "train" else "here"
        print(f"# {stage.id} ({where})", file=out)
        print(launch_line(stage, options) if stage.kind == "train" else stage_line(stage), file=out)
    return len(todo)


def require_gcloud() -> None:
    """ValueError when gcloud (which every tpu_scripts/*.sh calls) is not on PATH."""
    if shutil.which("gcloud") is None:
        raise ValueError("gcloud is not on PATH: --launcher=tpu starts training with tpu_scripts/launch.sh, which "
                         "needs the Google Cloud CLI; install it, or use --dry_run to print the commands")


def _call(argv: list[str], env: dict[str, str], log_file, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env={**os.environ, **env}, cwd=REPO, text=True,
                          stdout=subprocess.PIPE if capture else log_file, stderr=log_file)


def worker_state(options: TpuOptions, log_file) -> str:
    """Worker 0's training state from check.sh: running | exited:N | stopped | none."""
    r = _call(options.script("check", "--worker=0", "--lines=0"), options.settings(), log_file, capture=True)
    log_file.write(r.stdout)
    log_file.flush()
    m = _STATE.search(r.stdout or "")
    if r.returncode != 0 or m is None:
        return f"unknown (check.sh exit {r.returncode})"
    return m.group(1)


def run_train(stage: Stage, log_file, options: TpuOptions) -> int:
    """Start a training stage on the pod (unless worker 0 already trains: a run a killed runner
    launched, which is then waited for) and wait until it exits; returns its exit status."""
    state = worker_state(options, log_file)
    if state != "running":
        env, argv = launch_argv(stage, options)
        log_file.write(f"$ {launch_line(stage, options)}\n")
        log_file.flush()
        code = _call(argv, env, log_file).returncode
        if code != 0:
            return code
    unanswered = 0
    while True:
        state = worker_state(options, log_file)
        if state.startswith("exited:"):
            return int(state.split(":")[1])
        unanswered = unanswered + 1 if state.startswith("unknown") else 0
        if state in ("stopped", "none") or unanswered > UNANSWERED_POLLS:
            log_file.write(f"training on the pod is {state}: the stage failed\n")
            return 1
        time.sleep(options.poll_seconds)


def executor(options: TpuOptions):
    """For `launchers.run_local`: training stages run on the pod (`run_train`), others here."""
    def execute(stage: Stage):
        if stage.kind != "train":
            return None
        return lambda log_file: run_train(stage, log_file, options)
    return execute
