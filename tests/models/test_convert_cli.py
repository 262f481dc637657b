"""The converter binaries, run as a user runs them: happy path and bad input."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy
from models.hf_helpers import load_state, random_hf_model, save_hf_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _start(module: str, *raw_args: str, **flags) -> subprocess.Popen:
    args = [sys.executable, "-m", f"easylm_imitate.convert.{module}", *raw_args]
    args += [f"--{k}={v}" for k, v in flags.items()]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    return save_hf_dir(random_hf_model("tiny-llama", seed=6), tmp_path_factory.mktemp("good") / "hf")


def _bad_inputs(root, good_dir) -> dict:
    """case -> (module, flags, words the error must contain)."""
    unknown = root / "bert"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"], "model_type": "bert"}))

    wrong = root / "wrong_shape"
    save_hf_dir(random_hf_model("tiny-llama", seed=6), wrong)
    tensors = load_state(wrong)
    tensors["model.layers.1.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)
    safetensors.numpy.save_file(tensors, str(wrong / "model.safetensors"), metadata={"format": "pt"})

    truncated = root / "truncated"
    save_hf_dir(random_hf_model("tiny-llama", seed=6), truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    return {
        "missing": ("hf_to_checkpoint", {"hf_dir": root / "nope"}, ["nope", "no such directory"]),
        "unknown_arch": ("hf_to_checkpoint", {"hf_dir": unknown}, ["BertForMaskedLM", "unsupported architecture"]),
        "wrong_shape": ("hf_to_checkpoint", {"hf_dir": wrong},
                        ["model.layers.1.self_attn.k_proj.weight", "(16, 64)", "(32, 64)"]),
        "truncated": ("hf_to_checkpoint", {"hf_dir": truncated}, ["model.safetensors", "truncated"]),
        "export_missing": ("checkpoint_to_hf", {"checkpoint": root / "nope"}, ["nope"]),
        "gguf_missing": ("gguf_to_checkpoint", {"gguf": root / "nope.gguf"}, ["nope.gguf", "no such GGUF file"]),
    }


def test_binaries_convert_and_reject_bad_input(tmp_path, good_dir):
    cases = _bad_inputs(tmp_path, good_dir)
    procs = {name: _start(module, out=tmp_path / f"out_{name}", **flags)
             for name, (module, flags, _) in cases.items()}
    procs["import"] = _start("hf_to_checkpoint", hf_dir=good_dir, out=tmp_path / "ckpt")
    results = {name: _finish(p) for name, p in procs.items()}

    rc, out, err = results.pop("import")
    assert rc == 0, err
    assert out.strip() == str(tmp_path / "ckpt")
    rc, out, err = _finish(_start("checkpoint_to_hf", checkpoint=tmp_path / "ckpt", out=tmp_path / "export"))
    assert rc == 0, err
    original, exported = load_state(good_dir), load_state(tmp_path / "export")
    assert sorted(original) == sorted(exported) and all(np.array_equal(original[k], exported[k]) for k in original)

    for name, (rc, _, err) in results.items():
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc != 0, name
        assert "Traceback" not in err, (name, err)
        assert lines[-1].startswith("error: "), (name, err)
        for word in cases[name][2]:
            assert word in lines[-1], (name, word, lines[-1])
        assert not os.path.exists(tmp_path / f"out_{name}"), name
    assert not glob.glob(str(tmp_path / ".*partial*"))


def test_existing_checkpoint_is_not_overwritten(tmp_path, good_dir):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    rc, _, err = _finish(_start("hf_to_checkpoint", hf_dir=good_dir, out=target))
    assert rc != 0 and "already exists" in err.splitlines()[-1]
    assert os.listdir(target) == ["keep.txt"]


def test_help_lists_the_flags():
    binaries = {"hf_to_checkpoint": ["--hf_dir", "--out"],
                "checkpoint_to_hf": ["--checkpoint", "--out", "--dtype", "--max_shard_size", "--merge_lora", "--peft"],
                "gguf_to_checkpoint": ["--gguf", "--out"]}
    procs = {module: _start(module, "--help") for module in binaries}
    for module, flags in binaries.items():
        _, out, _ = _finish(procs[module])
        assert all(flag in out for flag in flags), module  # absl exits 1 after --help
