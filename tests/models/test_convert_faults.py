"""Converters under faulty input, as a user meets it: malformed config.json values, NaN
weights, a tied config that carries a different lm_head, and a conversion killed midway."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import safetensors.numpy
from models.hf_helpers import load_state, random_hf_model, save_hf_dir

from easylm_imitate.convert import output_dir
from easylm_imitate.convert.cli import run_or_exit
from easylm_imitate.convert.hf_checkpoint import hf_dir_to_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
    return save_hf_dir(random_hf_model("tiny-llama", seed=6), tmp_path_factory.mktemp("good") / "hf")


def _variant(good_dir, root, name, config=None, tensors=None) -> str:
    """A copy of `good_dir` with config.json fields changed (None deletes; a callable replaces the
    whole dict) and tensors changed (name -> array)."""
    path = str(root / name)
    shutil.copytree(good_dir, path)
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    if callable(config):
        cfg = config(cfg)
    else:
        for key, value in (config or {}).items():
            if value is None:
                cfg.pop(key)
            else:
                cfg[key] = value
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    if tensors:
        state = load_state(path)
        state.update(tensors)
        safetensors.numpy.save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    return path


def _convert_error(capsys, hf_dir, out) -> str:
    """The converter binaries' error path (run_or_exit): exit status 1 and one `error:` line."""
    with pytest.raises(SystemExit) as exc:
        run_or_exit(hf_dir_to_checkpoint, hf_dir, out)
    assert exc.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not os.path.exists(out)
    return lines[0]


# config.json change -> the field the error must name. Each of these was a traceback.
BAD_CONFIGS = {
    "hidden_size_string": ({"hidden_size": "64"}, "hidden_size"),
    "hidden_size_negative": ({"hidden_size": -64}, "hidden_size"),
    "zero_heads": ({"num_attention_heads": 0}, "num_attention_heads"),
    "heads_not_dividing": ({"num_attention_heads": 5, "head_dim": None}, "num_attention_heads"),
    "kv_heads_not_dividing": ({"num_key_value_heads": 3}, "num_key_value_heads"),
    "layers_null": (lambda cfg: {**cfg, "num_hidden_layers": None}, "num_hidden_layers"),
    "vocab_negative": ({"vocab_size": -1}, "vocab_size"),
    "rope_not_object": ({"rope_parameters": 5}, "rope_parameters"),
    "rope_theta_string": ({"rope_parameters": {"rope_type": "default", "rope_theta": "abc"}}, "rope_theta"),
    "eps_zero": ({"rms_norm_eps": 0}, "rms_norm_eps"),
    "eps_negative": ({"rms_norm_eps": -1e-5}, "rms_norm_eps"),
    "eps_string": ({"rms_norm_eps": "1e-5"}, "rms_norm_eps"),
    "tie_string": ({"tie_word_embeddings": "false"}, "tie_word_embeddings"),
    "window_string": ({"sliding_window": "x"}, "sliding_window"),
    "eos_string": ({"eos_token_id": "x"}, "eos_token_id"),
    "not_an_object": (lambda cfg: [cfg], "JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_malformed_config_value_is_one_line_error(case, good_dir, tmp_path, capsys):
    change, field = BAD_CONFIGS[case]
    hf_dir = _variant(good_dir, tmp_path, case, config=change)
    line = _convert_error(capsys, hf_dir, str(tmp_path / "out"))
    assert os.path.join(hf_dir, "config.json") in line and field in line, line


def test_nan_weight_is_refused_naming_the_tensor(good_dir, tmp_path, capsys):
    name = "model.layers.1.mlp.up_proj.weight"
    w = load_state(good_dir)[name].copy()
    w[3, 5] = np.nan
    hf_dir = _variant(good_dir, tmp_path, "nan", tensors={name: w})
    line = _convert_error(capsys, hf_dir, str(tmp_path / "out"))
    assert name in line and "NaN" in line and hf_dir in line, line


def test_tied_config_with_a_different_lm_head_is_refused(good_dir, tmp_path, capsys):
    hf_dir = _variant(good_dir, tmp_path, "tied_diff", config={"tie_word_embeddings": True})
    line = _convert_error(capsys, hf_dir, str(tmp_path / "out"))
    assert "lm_head.weight" in line and "tie_word_embeddings" in line and "differs" in line, line


def test_tied_config_with_an_equal_lm_head_converts(good_dir, tmp_path):
    embed = load_state(good_dir)["model.embed_tokens.weight"]
    hf_dir = _variant(good_dir, tmp_path, "tied_same", config={"tie_word_embeddings": True},
                      tensors={"lm_head.weight": embed.copy()})
    import easylm_imitate

    model, _ = easylm_imitate.load(hf_dir_to_checkpoint(hf_dir, tmp_path / "out"))
    assert model.cfg.tie_embeddings


def _partials(out) -> list[str]:
    return glob.glob(os.path.join(os.path.dirname(out), output_dir.partial_prefix(out) + "*"))


def test_live_conversions_staging_is_kept_and_dead_ones_removed(tmp_path):
    out = str(tmp_path / "ckpt")
    dead, live = tmp_path / ".ckpt.partial-123-dead", tmp_path / ".ckpt.partial-456-live"
    other = tmp_path / ".other.partial-789-dead"
    for d in (dead, live, other):
        (d / "params").mkdir(parents=True)
    # a live holder: a child process that keeps an exclusive flock on `live`
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()", str(live)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert output_dir.clean_stale_partials(out) == [str(dead)]
        assert live.is_dir() and other.is_dir() and not dead.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert output_dir.clean_stale_partials(out) == [str(live)]  # its holder has exited


def _gguf_cli(out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "easylm_imitate.convert.gguf_to_checkpoint",
                             "--gguf=smollm2-135m-instruct", f"--out={out}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_gguf_conversion_is_cleaned_by_the_rerun(tmp_path):
    out = str(tmp_path / "ckpt")
    proc = _gguf_cli(out)
    deadline = time.monotonic() + 120
    while not _partials(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    if not _partials(out):
        pytest.fail("the conversion never staged anything to kill")
    assert not os.path.exists(out)
    rc = (rerun := _gguf_cli(out)).wait(timeout=600)
    assert rc == 0, rerun.stderr.read()
    assert os.path.isfile(os.path.join(out, "meta.json"))
    assert _partials(out) == []
