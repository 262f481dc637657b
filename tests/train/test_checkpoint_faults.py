"""Faults a careful user meets between runs: flipped bytes in a checkpoint, a tampered data
position, a loss that turns NaN. A rerun never trains on garbage and never loses the last
good checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from support.train_helpers import REPO, env_with_devices, final_params, run_train, train_cmd

STEPS = ("--config.save_every_steps=5", "--config.eval_every_steps=0")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A run with finite checkpoints at steps 5 and 10."""
    workdir = tmp_path_factory.mktemp("base") / "run"
    run_train(str(workdir), "--config.total_steps=10", *STEPS, devices=1)
    return workdir


@pytest.fixture
def run_copy(base_run, tmp_path):
    """A private copy of the base run."""
    workdir = tmp_path / "run"
    shutil.copytree(base_run, workdir)
    return workdir


def _rerun(workdir, *overrides) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(str(workdir), *STEPS, *overrides), env=env_with_devices(1), cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _nan_bytes_into_params(workdir, step: int) -> str:
    """Overwrite 8 bytes in the middle of step's largest parameter file with 0xFF (a NaN)."""
    params = workdir / "checkpoints" / str(step) / "params"
    biggest = max((p for p in params.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    raw = bytearray(biggest.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 8] = b"\xff" * 8
    biggest.write_bytes(bytes(raw))
    return str(biggest)


def _all_finite(params: dict) -> bool:
    return all(np.isfinite(v).all() for v in params.values())


def test_flipped_bytes_in_latest_step_fall_back_to_previous_and_set_it_aside(run_copy):
    _nan_bytes_into_params(run_copy, 10)
    proc = _rerun(run_copy, "--config.total_steps=15")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    warning = next(line for line in proc.stdout.splitlines() if line.startswith("warning:"))
    assert "step 10" in warning and "checkpoints.bad" in warning, warning
    assert "resuming from step 5" in proc.stdout
    assert (run_copy / "checkpoints.bad" / "10" / "params").is_dir()  # set aside, not deleted
    assert (run_copy / "checkpoints" / "5").is_dir()  # the earlier good checkpoint survives
    assert _all_finite(final_params(str(run_copy)))


def test_no_usable_step_is_refused_naming_each_and_moving_nothing(run_copy):
    for step in (5, 10):
        _nan_bytes_into_params(run_copy, step)
    proc = _rerun(run_copy, "--config.total_steps=15")
    assert proc.returncode != 0
    last = _last_line(proc.stderr)
    assert last.startswith("error: no usable checkpoint"), last
    for step in (5, 10):
        assert os.path.join(str(run_copy), "checkpoints", str(step)) in last
        assert (run_copy / "checkpoints" / str(step)).is_dir()
    assert not (run_copy / "checkpoints.bad").exists()


def test_data_position_that_disagrees_with_the_step_is_not_used(run_copy):
    data_item = run_copy / "checkpoints" / "10" / "data" / "metadata"
    assert json.loads(data_item.read_text()) == {"next_index": 10}
    data_item.write_text(json.dumps({"next_index": 0}))
    proc = _rerun(run_copy, "--config.total_steps=15")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    warning = next(line for line in proc.stdout.splitlines() if line.startswith("warning:"))
    assert "step 10" in warning and "next_index 0" in warning, warning
    assert "resuming from step 5" in proc.stdout


def test_changed_training_data_is_refused(run_copy, tmp_path):
    from easylm_imitate.assets import asset_path

    fewer = tmp_path / "fewer.jsonl"
    with open(asset_path("smoke_conversations.jsonl"), encoding="utf-8") as f:
        fewer.write_text("".join(f.readlines()[:200]))
    proc = _rerun(run_copy, "--config.total_steps=15", f"--config.data.train_file={fewer}")
    assert proc.returncode != 0
    last = _last_line(proc.stderr)
    assert "training data differs" in last and "checkpoints" in last, last
    assert not (run_copy / "checkpoints.bad").exists()


def test_nan_loss_stops_the_run_and_the_last_finite_checkpoint_stays_latest(run_copy):
    from easylm_imitate.train import run_checkpoint

    proc = _rerun(run_copy, "--config.total_steps=30", "--config.learning_rate=1e30",
                  "--config.optimizer.warmup_steps=0")
    assert proc.returncode != 0, proc.stdout[-2000:]
    last = _last_line(proc.stderr)
    assert last.startswith("error: step ") and "nan" in last and "nonfinite=stop" in last, last
    assert run_checkpoint.read_run_meta(str(run_copy))[0] == 10
    assert _all_finite(final_params(str(run_copy)))
