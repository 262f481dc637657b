"""`--compile_only`: per-device memory plans on local devices and on absent TPU slices."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from support.train_helpers import REPO, env_with_devices, smoke_config

LLAMA_7B = os.path.join(REPO, "configs", "llama_7b_imitation.py")
GIB = 1024 ** 3


def _plan(*args: str, devices: int = 8, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "easylm_imitate.train", f"--config={LLAMA_7B}", "--compile_only", *args]
    return subprocess.run(cmd, env=env_with_devices(devices), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _gib(output: str, label: str) -> float:
    return float(re.search(rf"{label}\s+([0-9.]+) GiB", output).group(1))


def test_cpu_plan_for_llama_7b_matches_the_parameter_count():
    from easylm_imitate.models import get_preset

    proc = _plan("--config.batch_size=8", "--config.seq_length=128")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "memory plan for 8 local CPU devices" in out and "activations+temp" in out
    # the plan says which model it is for, so a forgotten init_from or preset cannot go unnoticed
    n = get_preset("llama-7b").num_params() / 1e6
    assert f"model             preset llama-7b: {n:,.1f}M params" in out and "batch 8 x 128 tokens" in out
    expected = get_preset("llama-7b").num_params() * 4 / 8 / GIB  # float32, split over fsdp=8
    assert abs(_gib(out, "parameters") - expected) / expected < 0.05
    # The paper's optimizer keeps a float32 second moment and momentum per parameter.
    assert abs(_gib(out, "optimizer state") - 2 * expected) / (2 * expected) < 0.05


def test_tpu_v4_32_plan_for_llama_7b():
    proc = _plan("--compile_topology=v4-32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "memory plan for TPU v4-32: 16 devices" in proc.stdout
    assert "-> fits" in proc.stdout
    assert 0 < _gib(proc.stdout, "activations\\+temp") < 32


def test_oversized_setting_reports_does_not_fit_with_the_numbers():
    proc = _plan("--compile_topology=v5e-4", "--config.model.remat=none")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "DOES NOT FIT on TPU v5e-4" in proc.stdout
    assert re.search(r"[0-9.]+G", proc.stdout.split("compiler:")[1])


def test_unknown_topology_is_a_one_line_error():
    proc = _plan("--compile_topology=v9-1")
    assert proc.returncode == 1
    assert "unknown slice 'v9-1'" in proc.stderr


def test_plan_names_parameter_dimensions_the_mesh_cannot_split():
    from easylm_imitate.train.memory_plan import plan

    # tiny-gpt2's 4 heads cannot be split 8 ways: the plan says which parameters stay whole.
    report = plan(smoke_config(**{"model.preset": "tiny-gpt2", "mesh": "dp:1,fsdp:1,tp:8", "seq_length": 32}))
    text = report.render()
    assert "memory plan for 8 local CPU devices" in text
    assert "warning: parameter blocks/wq: dimension 2 (heads, size 4) is not split over mesh axis tp" in text
    assert "parameter wte:" not in text  # its vocabulary of 512 does split


def test_plan_rejects_a_batch_the_mesh_cannot_split():
    from easylm_imitate.train.memory_plan import plan

    with pytest.raises(ValueError, match=r"batch_size 12 with grad_accum_steps 1 on mesh .*'fsdp': 8"):
        plan(smoke_config(**{"batch_size": 12, "seq_length": 32}))
