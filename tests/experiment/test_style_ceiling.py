"""`reference.second_sample`: the experiment-level stage scoring the target's second sample
against its reference replies (the ceiling row of the report's Table 2)."""

from __future__ import annotations

import os
import subprocess
import sys

import ml_collections
import pytest

from easylm_imitate.experiment import spec

FALSE_PROMISE = os.path.join(spec.REPO, "configs", "experiments", "false_promise.py")
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_PYTHON_CLIENT_PREALLOCATE="false")


def dry_run(tmp_path, *extra) -> str:
    """Stdout of `--dry_run` of the paper's sweep (no data or model needed)."""
    r = subprocess.run([sys.executable, "-m", "easylm_imitate.experiment", f"--config={FALSE_PROMISE}:{tmp_path}",
                        f"--workdir={tmp_path / 'exp'}", "--dry_run", *extra], cwd=spec.REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_second_sample_adds_one_experiment_level_style_stage_with_its_command(tmp_path):
    second = tmp_path / "second.jsonl"
    out = dry_run(tmp_path, f"--config.reference.second_sample={second}")
    lines = out.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("cell target:")))
    assert "experiment-level" in lines[at]
    assert lines[at + 1].split()[:2] == ["pending", "eval_style"]
    command = lines[at + 2]
    assert "eval/style.py" in command and f"--answers={second}" in command
    assert f"--out={tmp_path / 'exp' / 'target' / 'eval_style' / 'results.json'}" in command
    assert "'--model_name=chatgpt (second sample)'" in command and "--reference=" in command
    assert "--checkpoint" not in command
    assert "24 cells, 211 stages" in lines[-1]  # one stage more, no cell more
    assert sum(line.startswith("cell target") for line in lines) == 1


def test_without_second_sample_nothing_changes(tmp_path):
    out = dry_run(tmp_path)
    assert "cell target" not in out and "24 cells, 210 stages" in out.splitlines()[-1]


def test_second_sample_without_reference_file_names_the_field():
    c = spec.new_experiment("x")
    c.bases.b = spec.base("ckpt", "configs/llama_7b_imitation.py", "llama")
    c.datasets.none = spec.dataset("none")
    c.cells.b__none__s0 = ml_collections.ConfigDict({"base": "b", "data": "none", "seed": 0})
    spec.validate(c)
    c.reference.second_sample = "second.jsonl"
    with pytest.raises(ValueError, match=r"config\.reference\.second_sample needs config\.reference\.file"):
        spec.validate(c)
