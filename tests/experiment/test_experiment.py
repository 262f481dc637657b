"""The experiment runner as a user drives it: `python -m easylm_imitate.experiment`."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from easylm_imitate.evaluation.report import HEADLINE
from easylm_imitate.experiment import markers, spec
from easylm_imitate.experiment.fingerprint import ContentHashes
from easylm_imitate.experiment.launchers import statuses
from easylm_imitate.experiment.plan import build_plan

REPO = spec.REPO
FALSE_PROMISE = os.path.join(REPO, "configs", "experiments", "false_promise.py")
STYLE_HEADLINE = HEADLINE["style"]  # Table 2's columns
TINY = os.path.join(REPO, "tests", "experiment", "tiny_experiment.py")
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
           XLA_PYTHON_CLIENT_PREALLOCATE="false")


def experiment(*args, timeout=600) -> subprocess.CompletedProcess:
    """Run the experiment binary to completion."""
    return subprocess.run([sys.executable, "-m", "easylm_imitate.experiment", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def plan_statuses(dry_run_stdout: str) -> dict[str, str]:
    """cell/stage -> status from a --dry_run listing."""
    out, cell = {}, None
    for line in dry_run_stdout.splitlines():
        if line.startswith("cell "):
            cell = line.split()[1].rstrip(":")
        m = re.match(r"  (\w+)\s+(\S+)\s+[0-9a-f]{16}$", line)
        if m:
            out[f"{cell}/{m.group(2)}"] = m.group(1)
    return out


def test_false_promise_dry_run_lists_24_cells_without_data_or_model(tmp_path):
    workdir = tmp_path / "exp"
    r = experiment(f"--config={FALSE_PROMISE}:{tmp_path / 'nothing_here'}", f"--workdir={workdir}", "--dry_run")
    assert r.returncode == 0, r.stderr
    cells = [line.split()[1].rstrip(":") for line in r.stdout.splitlines() if line.startswith("cell ")]
    bases = ("gpt2_xl", "llama_7b", "llama_13b")
    data = ("none", "sharegpt_300K", "sharegpt_5M", "sharegpt_10M", "sharegpt_20M", "sharegpt_80M",
            "sharegpt_150M", "nq_synthetic")
    assert sorted(cells) == sorted(f"{b}__{d}__s0" for b in bases for d in data)
    assert "24 cells" in r.stdout.splitlines()[-1]
    assert set(plan_statuses(r.stdout).values()) == {"pending"}
    assert "train on 20M tokens" in r.stdout and "no training (evaluates the base)" in r.stdout
    # every stage shows the command a user could run by hand
    assert "-m easylm_imitate.train --config=" in r.stdout and "eval/mmlu.py" in r.stdout
    assert not workdir.exists()  # a dry run writes nothing


def test_print_launcher_prints_one_line_per_pending_stage(tmp_path):
    args = (f"--config={FALSE_PROMISE}:{tmp_path}", f"--workdir={tmp_path / 'exp'}")
    plan = plan_statuses(experiment(*args, "--dry_run").stdout)
    r = experiment(*args, "--launcher=print")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(plan) == 210
    for line in lines:  # markers begin && the stage's binary && markers end
        parts = line.split(" && ")
        assert len(parts) == 3 and "markers begin" in parts[0] and "markers end" in parts[2]


def _finish(config, workdir: str, cells: int, extra_stages: int) -> None:
    """Mark the first `cells` cells done, and the first `extra_stages` stages of the next one."""
    plan = build_plan(config, workdir, ContentHashes(None))
    for s in [s for c in plan[:cells] for s in c.stages] + plan[cells].stages[:extra_stages]:
        markers.end(s.out_dir, s.fingerprint, {})


def _array_tasks(script: str) -> dict[int, tuple[str, list[str]]]:
    """Array task id -> (cell, the stage lines it runs in order) from the script's case."""
    tasks, current = {}, None
    for line in script.splitlines():
        m = re.match(r"  (\d+)\)  # (\S+)$", line)
        if m:
            current = tasks.setdefault(int(m.group(1)), (m.group(2), []))
        elif line.startswith("    stage ") and current is not None:
            _, stage_id, stage_line = shlex.split(line)
            assert stage_id.split("/")[0] == current[0]
            current[1].append(stage_line)
    return tasks


def test_slurm_dry_run_writes_an_array_script_with_one_task_per_cell_with_pending_stages(tmp_path):
    workdir = str(tmp_path / "exp")
    _finish(_load(FALSE_PROMISE, str(tmp_path)), workdir, cells=10, extra_stages=2)
    args = (f"--config={FALSE_PROMISE}:{tmp_path}", f"--workdir={workdir}")
    r = experiment(*args, "--launcher=slurm", "--dry_run", "--slurm_partition=gpu", "--slurm_gpus=4",
                   "--slurm_time=12:00:00")
    assert r.returncode == 0, r.stderr
    path = r.stdout.strip()
    assert path == os.path.join(workdir, "slurm", "false_promise.sbatch")
    assert subprocess.run(["bash", "-n", path], capture_output=True).returncode == 0
    script = open(path).read()
    assert re.search(r"^#SBATCH --array=0-13$", script, re.M)  # 24 cells, 10 done: 14 tasks
    for line in ("--partition=gpu", "--gpus-per-node=4", "--cpus-per-task=32", "--time=12:00:00",
                 "--signal=B:TERM@300"):
        assert f"#SBATCH {line}\n" in script
    assert "tpu_scripts/gpu/xla_env.sh" in script

    printed = experiment(*args, "--launcher=print").stdout.splitlines()
    by_cell: dict[str, list[str]] = {}
    for line in printed:  # the cell is in --stage_dir=.../cells/<cell>/<stage>
        by_cell.setdefault(re.search(r"/cells/([^/]+)/", line).group(1), []).append(line)
    tasks = _array_tasks(script)
    assert sorted(tasks) == list(range(14))
    assert [tasks[i][0] for i in range(14)] == list(by_cell)  # cells in plan order
    for cell, lines in tasks.values():
        assert lines == by_cell[cell]  # the very lines --launcher=print prints, in order
    assert len(tasks[0][1]) == len(tasks[1][1]) - 2  # the half-done cell runs only what is left


def test_slurm_runs_a_cells_stages_in_order_and_stops_at_a_failure(tmp_path):
    workdir = tmp_path / "exp"
    r = experiment(f"--config={FALSE_PROMISE}:{tmp_path}", f"--workdir={workdir}", "--launcher=slurm", "--dry_run")
    # array task 0 outside SLURM: its first stage (an evaluation of a base that is not there) fails
    env = dict(ENV, SLURM_ARRAY_TASK_ID="0", PATH=os.environ["PATH"])
    run = subprocess.run(["bash", r.stdout.strip()], env=env, capture_output=True, text=True, timeout=120)
    cell = workdir / "cells" / "gpt2_xl__none__s0"
    assert run.returncode != 0 and "FAILED gpt2_xl__none__s0/eval_humaneval" in run.stderr, run.stderr
    assert (cell / "eval_humaneval.started.json").exists()  # the printed line's markers ran
    assert not (cell / "eval_humaneval.done.json").exists() and not (cell / "eval_judge.started.json").exists()


def test_slurm_submits_with_sbatch_and_needs_it(tmp_path):
    args = (f"--config={FALSE_PROMISE}:{tmp_path}", f"--workdir={tmp_path / 'exp'}", "--launcher=slurm")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / "sbatch_args"}\necho "Submitted batch job 42"\n')
    fake.chmod(0o755)
    r = subprocess.run([sys.executable, "-m", "easylm_imitate.experiment", *args], cwd=REPO,
                       env=dict(ENV, PATH=f"{bin_dir}:{os.environ['PATH']}"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    script = str(tmp_path / "exp" / "slurm" / "false_promise.sbatch")
    assert (tmp_path / "sbatch_args").read_text().splitlines() == [script]
    assert "Submitted batch job 42" in r.stdout and "24 array tasks" in r.stdout

    r = subprocess.run([sys.executable, "-m", "easylm_imitate.experiment", *args], cwd=REPO,
                       env=dict(ENV, PATH=str(tmp_path / "empty")), capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "sbatch is not on PATH" in r.stderr


def _load(path: str, arg: str):
    import importlib.util

    s = importlib.util.spec_from_file_location("_exp_config", path)
    module = importlib.util.module_from_spec(s)
    s.loader.exec_module(module)
    return module.get_config(arg)


def test_changing_one_cells_learning_rate_marks_only_its_train_and_evaluations_stale(tmp_path):
    config = _load(FALSE_PROMISE, str(tmp_path))
    workdir = str(tmp_path / "exp")
    cells = build_plan(config, workdir, ContentHashes(None))
    for cell in cells:  # as if the whole sweep had finished
        for s in cell.stages:
            markers.end(s.out_dir, s.fingerprint, {})
    assert set(statuses(cells).values()) == {"done"}
    config.cells.llama_7b__sharegpt_20M__s0.train.learning_rate = 1e-3
    state = statuses(build_plan(config, workdir, ContentHashes(None)))
    stale = {k for k, v in state.items() if v != "done"}
    cell = "llama_7b__sharegpt_20M__s0"
    assert stale == {f"{cell}/train", f"{cell}/results"} | {f"{cell}/eval_{e}" for e in config.evals}
    assert {state[k] for k in stale} == {"stale"}


# ---- a real tiny sweep: local launcher, kill -9 during training, rerun ----

@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """ROOT of the tiny experiment: base/ (a random tiny LLaMA) and build/ (two budgets)."""
    from flax import nnx
    from transformers import AutoTokenizer

    from easylm_imitate import checkpoint
    from easylm_imitate.assets import asset_path
    from easylm_imitate.models import build_model
    from easylm_imitate.models.presets import get_preset

    root = tmp_path_factory.mktemp("tiny")
    cfg = get_preset("tiny-llama")
    checkpoint.save_params(root / "base", cfg, nnx.state(build_model(cfg, seed=0)).to_pure_dict(),
                           tokenizer=AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer")))
    subprocess.run([sys.executable, "-m", "easylm_imitate.data.build",
                    f"--input=canonical:{asset_path('smoke_conversations.jsonl')}", f"--out={root / 'build'}",
                    "--token_counter=approx", "--token_budgets=2K,4K", "--eval_prompts=0", "--languages="],
                   check=True, cwd=REPO, env=ENV, capture_output=True)
    return root


def _executed(stdout: str) -> int:
    return int(re.search(r"finished: (\d+) executed", stdout).group(1))


def test_tiny_sweep_survives_kill_9_and_a_rerun_executes_nothing(tiny_root):
    args = (f"--config={TINY}:{tiny_root}", f"--workdir={tiny_root / 'exp'}")
    train_dir = tiny_root / "exp" / "cells" / "tiny__small__s0" / "train"
    proc = subprocess.Popen([sys.executable, "-m", "easylm_imitate.experiment", *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (train_dir / "checkpoints" / "5").is_dir():  # the first checkpoint of the first training stage
        assert proc.poll() is None and time.monotonic() < deadline, "runner ended before the first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert markers.status(str(train_dir), json.loads(open(f"{train_dir}.started.json").read())["fingerprint"]) \
        == markers.PARTIAL

    before = plan_statuses(experiment(*args, "--dry_run").stdout)
    pending = [k for k, v in before.items() if v != "done"]
    assert before["tiny__small__s0/data"] == "done" and before["tiny__small__s0/train"] == "partial"
    r = experiment(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _executed(r.stdout) == len(pending) == 19  # small s0: train, 2 evaluations, results; 3 cells x 5
    assert "start tiny__small__s0/train (resuming)" in r.stdout
    train_log = open(f"{train_dir}.log").read()
    assert "resuming from step" in train_log

    results = json.load(open(tiny_root / "exp" / "cells" / "tiny__large__s0" / "results" / "results.json"))
    assert results["imitation_tokens"] == 4000 and set(results["evaluations"]) == {"loss", "style"}
    assert results["evaluations"]["loss"]["metrics"]["tokens"] > 0
    log = open(tiny_root / "exp" / "experiment.log").read()
    assert "done tiny__large__s0/eval_loss" in log and "loss=" in log

    again = experiment(*args)
    assert again.returncode == 0 and _executed(again.stdout) == 0
    assert set(plan_statuses(experiment(*args, "--dry_run").stdout).values()) == {"done"}

    # one cell's learning rate changes: only its train, evaluations and results are stale
    lr = ("--config.cells.tiny__small__s0.train.learning_rate=0.002",)
    changed = plan_statuses(experiment(*args, *lr, "--dry_run").stdout)
    assert {k for k, v in changed.items() if v == "stale"} == {
        "tiny__small__s0/train", "tiny__small__s0/eval_loss", "tiny__small__s0/eval_style", "tiny__small__s0/results"}
    printed = experiment(*args, *lr, "--launcher=print").stdout.splitlines()
    assert len(printed) == 4 and "--config.learning_rate=0.002" in printed[0]


def test_kill_9_during_an_evaluation_stage_then_rerun_runs_exactly_what_was_pending(tiny_root):
    args = (f"--config={TINY}:{tiny_root},seeds=0", f"--workdir={tiny_root / 'exp_eval_kill'}")  # 2 cells
    cell = tiny_root / "exp_eval_kill" / "cells" / "tiny__small__s0"
    proc = subprocess.Popen([sys.executable, "-m", "easylm_imitate.experiment", *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (cell / "eval_style.started.json").exists():  # the style evaluation (sampling) has begun
        assert proc.poll() is None and time.monotonic() < deadline, "runner ended before the style evaluation"
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the evaluation: its child is loading the model and sampling
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cell / "eval_style.done.json").exists()

    before = plan_statuses(experiment(*args, "--dry_run").stdout)
    pending = sorted(k for k, v in before.items() if v != "done")
    assert before["tiny__small__s0/eval_style"] == "partial"
    assert {before[f"tiny__small__s0/{s}"] for s in ("data", "train", "eval_loss")} == {"done"}
    r = experiment(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _executed(r.stdout) == len(pending) == 7  # small: eval_style, results; large: all 5
    started = sorted(re.findall(r" start ([\w/]+)", r.stdout))
    assert started == pending  # nothing that had finished ran again
    assert set(plan_statuses(experiment(*args, "--dry_run").stdout).values()) == {"done"}
    style = json.load(open(cell / "eval_style" / "results.json"))
    assert style.get("status") != "failed"


def _report(experiment_dir, out_dir) -> str:
    """report.html of `eval/report.py --experiment=experiment_dir`, run as a user runs it."""
    r = subprocess.run([sys.executable, os.path.join(REPO, "eval", "report.py"), f"--experiment={experiment_dir}",
                        f"--out_dir={out_dir}", "--n_boot=200"], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return (out_dir / "report.html").read_text()


def _section(page: str, title: str) -> str:
    """The HTML between heading `title` and the next <h2>."""
    start = page.index(f"<h2>{title}</h2>")
    end = page.find("<h2>", start + 1)
    return page[start:end if end >= 0 else len(page)]


def test_tiny_sweep_report_holds_the_loss_plot_and_style_table_with_seed_spread(tiny_root, tmp_path):
    workdir = tiny_root / "exp"  # the sweep of the kill -9 test; run (or finished) here when alone
    r = experiment(f"--config={TINY}:{tiny_root}", f"--workdir={workdir}")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "report"
    page = _report(workdir, out)

    # the held-out loss vs imitation tokens plot, as a PNG file and embedded as a data URI
    plot = "plots/heldout_loss__loss__vs_tokens.png"
    assert (out / plot).read_bytes().startswith(b"\x89PNG")
    figures = re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)' alt='([^']+)'>", page)
    assert [alt for _, alt in figures] == [plot]  # one base size: no plot vs size
    assert base64.b64decode(figures[0][0]) == (out / plot).read_bytes()
    assert "4 cells" in page

    # one row per budget in the loss table and in Table 2; every number is the mean over 2 seeds
    loss = _section(page, "Benchmarks vs imitation tokens and base model size (Figure 4)")
    style = _section(page, "Table 2: style convergence vs imitation tokens")
    style_file = workdir / "cells" / "tiny__small__s0" / "eval_style" / "results.json"
    numeric = [m for m in STYLE_HEADLINE if isinstance(json.load(open(style_file))["metrics"].get(m), float)]
    assert numeric  # (a random tiny model's replies leave some style metrics undefined: shown as '-')
    for table, metrics in ((loss, 1), (style, len(numeric))):
        rows = re.findall(r"<tr><td>tiny</td><td>(\w+)</td><td>([^<]+)</td>(.*?)</tr>", table, re.S)
        assert [(data, tokens) for data, tokens, _ in rows] == [("small", "2000"), ("large", "4000")]
        for data, _, cells in rows:
            spreads = re.findall(r"sd [^ ]+ over 2 seeds: (.*?)</span>", cells)
            assert len(spreads) == metrics, cells
            for spread in spreads:
                seeds = re.findall(r"<a href='([^']+)'[^>]*>s(\d)=", spread)
                assert [s for _, s in seeds] == ["0", "1"]
                for href, seed in seeds:  # each seed's number links to its results file
                    target = (out / href).resolve()
                    assert target.is_file() and target.parent.parent.name == f"tiny__{data}__s{seed}"
                    assert json.load(open(target))["benchmark"] in ("heldout_loss", "style")
    assert re.findall(r"<th>([^<]+)</th>", style)[3:] == STYLE_HEADLINE
    assert "Failed runs" not in page and "Unreadable" not in page


# ---- --launcher=tpu: training through tpu_scripts/launch.sh, everything else here ----

def _launch_env(line: str) -> dict[str, str]:
    """The VAR=value settings in front of a printed launch.sh line."""
    words = shlex.split(line)
    assert words[-1] == os.path.join(REPO, "tpu_scripts", "launch.sh")
    return dict(w.split("=", 1) for w in words[:-1])


def test_tpu_dry_run_prints_launch_sh_per_pending_training_and_local_lines_for_the_rest(tmp_path):
    workdir = str(tmp_path / "exp")
    _finish(_load(FALSE_PROMISE, str(tmp_path)), workdir, cells=1, extra_stages=0)  # gpt2_xl__none__s0 done
    args = (f"--config={FALSE_PROMISE}:{tmp_path}", f"--workdir={workdir}")
    r = experiment(*args, "--launcher=tpu", "--dry_run", "--tpu_name=pod7b", "--tpu_zone=us-central2-b",
                   "--tpu_project=proj-1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    headers, commands = lines[0::2], lines[1::2]
    assert all(h.startswith("# ") for h in headers) and len(headers) == len(commands)
    printed = experiment(*args, "--launcher=print").stdout.splitlines()
    assert len(commands) == len(printed) == 210 - 7  # one line per pending stage, in the same order
    launches = [c for c in commands if "launch.sh" in c]
    assert len(launches) == 21  # 3 bases x 7 imitation data sets
    for header, command, local in zip(headers, commands, printed):
        if command in launches:
            assert header.endswith("/train (pod)")
        else:  # data, evaluations and results run here, exactly as --launcher=print prints them
            assert header.endswith("(here)") and command == local
    env = _launch_env(next(c for c in launches if "llama_7b__sharegpt_20M__s0" in c))
    cell_dir = os.path.join(workdir, "cells", "llama_7b__sharegpt_20M__s0")
    assert env["TPU_NAME"] == "pod7b" and env["TPU_ZONE"] == "us-central2-b" and env["TPU_PROJECT"] == "proj-1"
    assert env["TRAIN_CONFIG"] == "configs/llama_7b_imitation.py"  # relative: launch.sh copies the checkout
    assert env["TRAIN_WORKDIR"] == os.path.join(cell_dir, "train")
    train_args = env["TRAIN_ARGS"].split()
    assert f"--config.init_from={tmp_path}/checkpoints/llama-7b" in train_args
    assert any(a.startswith("--config.data.train_file=") and a.endswith("train_20M.jsonl") for a in train_args)
    assert not (tmp_path / "exp" / "cells" / "gpt2_xl__sharegpt_5M__s0").exists()  # a dry run writes nothing


FAKE_GCLOUD = """#!/bin/sh
# records every call; worker 0 reports a finished run; every other call succeeds
printf '%s\\n' "$*" >> {log}
case "$*" in
  *status.sh*) echo "=== w-0: exited:0 ===" ;;
  *describe*) echo READY ;;
esac
"""


def test_tpu_launcher_trains_through_launch_sh_and_evaluates_here(tiny_root, tmp_path):
    args = (f"--config={TINY}:{tiny_root},seeds=0", f"--workdir={tmp_path / 'exp'}", "--launcher=tpu",
            "--tpu_name=pod1", "--tpu_zone=zone-a", "--tpu_project=proj-1", "--tpu_poll_seconds=0")
    r = subprocess.run([sys.executable, "-m", "easylm_imitate.experiment", *args], cwd=REPO,
                       env=dict(ENV, PATH=str(tmp_path / "empty")), capture_output=True, text=True)
    assert r.returncode == 1 and not (tmp_path / "exp").exists()
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "gcloud is not on PATH" in r.stderr

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD.format(log=tmp_path / "gcloud_calls"))
    (bin_dir / "gcloud").chmod(0o755)
    r = subprocess.run([sys.executable, "-m", "easylm_imitate.experiment", *args], cwd=REPO,
                       env=dict(ENV, PATH=f"{bin_dir}:{os.environ['PATH']}"), capture_output=True, text=True,
                       timeout=600)
    calls = (tmp_path / "gcloud_calls").read_text().splitlines()
    starts = [c for c in calls if "remote/start.sh" in c]
    cells = ("tiny__small__s0", "tiny__large__s0")
    assert len(starts) == len(cells), calls  # one launch per training stage, on every worker, in plan order
    for start, cell in zip(starts, cells):
        assert "tpu-vm ssh pod1 --zone=zone-a --project=proj-1 --worker=all" in start
        assert "--config=tests/experiment/tiny_train.py" in start
        assert f"--workdir={tmp_path}/exp/cells/{cell}/train" in start and "--config.init_from=" in start
        assert markers.status(str(tmp_path / "exp" / "cells" / cell / "train"),
                              json.load(open(tmp_path / "exp" / "cells" / cell / "train.done.json"))["fingerprint"]) \
            == markers.DONE  # worker 0 said exited:0
    assert any("status.sh" in c and "--worker=0" in c for c in calls)
    # the data and evaluation stages ran here (they fail: the fake pod wrote no checkpoint)
    for cell in cells:
        assert (tmp_path / "exp" / "cells" / cell / "data.done.json").exists()
        eval_log = (tmp_path / "exp" / "cells" / cell / "eval_loss.log").read_text()
        assert "easylm_imitate.experiment.heldout_loss" in eval_log
    assert r.returncode == 1 and "FAILED tiny__small__s0/eval_loss" in r.stdout


SCRIPTED_GCLOUD = """#!/bin/sh
# worker 0 answers the next line of {answers} on each status call; other calls are recorded
printf '%s\\n' "$*" >> {log}
case "$*" in
  *status.sh*) n=$(grep -c status.sh {log}); echo "=== w-0: $(sed -n "${{n}}p" {answers}) ===" ;;
esac
"""


@pytest.mark.parametrize("answers, code, launched", [
    (["exited:0", "running", "running", "exited:3"], 3, True),  # a previous run had ended: launch, wait, its exit
    (["running", "stopped"], 1, False),  # a run a killed runner launched: wait for it, do not launch again
])
def test_tpu_train_stage_waits_for_worker_0_and_returns_its_exit(tmp_path, monkeypatch, answers, code, launched):
    from easylm_imitate.experiment import tpu
    from easylm_imitate.experiment.plan import Stage

    (tmp_path / "answers").write_text("\n".join(answers) + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(SCRIPTED_GCLOUD.format(answers=tmp_path / "answers", log=tmp_path / "calls"))
    (bin_dir / "gcloud").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    command = [sys.executable, "-m", "easylm_imitate.train", "--config=tests/experiment/tiny_train.py",
               f"--workdir={tmp_path / 'train'}", "--config.init_from=/b"]
    stage = Stage("c", "train", "train", "f" * 16, command, str(tmp_path / "train"), [])
    options = tpu.TpuOptions("pod1", "zone-a", "proj-1", poll_seconds=0)
    with open(tmp_path / "train.log", "w") as log_file:
        assert tpu.run_train(stage, log_file, options) == code
    calls = (tmp_path / "calls").read_text()
    assert calls.count("status.sh") == len(answers) and ("remote/start.sh" in calls) == launched
