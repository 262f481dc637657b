"""A disk that fills up during a save: the run stops with one line naming the step directory
and the cause, the previous checkpoint stays intact and a rerun with space resumes from it."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from support.train_helpers import REPO, env_with_devices, final_params, run_train, train_cmd


@pytest.fixture
def small_disk(tmp_path):
    """A 2200 KiB tmpfs: room for one tiny-llama checkpoint (~1.5 MB) but not two."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2200k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip() or proc.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_save_names_the_step_and_cause_and_a_rerun_resumes(small_disk):
    from easylm_imitate.train import run_checkpoint

    workdir = small_disk / "run"
    steps = ("--config.total_steps=15", "--config.save_every_steps=5", "--config.eval_every_steps=0",
             "--config.keep_checkpoints=1")
    proc = subprocess.run(train_cmd(str(workdir), *steps), env=env_with_devices(1), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"error: checkpoint save failed: No space left on device: {workdir}/checkpoints/10", last
    assert "RESOURCE_EXHAUSTED" not in proc.stderr  # Orbax's writer-thread tracebacks go to a file instead
    assert "RESOURCE_EXHAUSTED" in (workdir / "library_errors.log").read_text()
    assert run_checkpoint.read_run_meta(str(workdir))[0] == 5
    assert all(np.isfinite(v).all() for v in final_params(str(workdir)).values())

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    rerun = run_train(str(workdir), *steps, devices=1)
    assert "resuming from step 5" in rerun.stdout
    assert run_checkpoint.read_run_meta(str(workdir))[0] == 15
    assert not [d for d in os.listdir(workdir / "checkpoints") if "tmp" in d]
