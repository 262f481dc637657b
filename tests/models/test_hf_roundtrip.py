"""HF directory -> checkpoint -> HF directory is bit-exact, and exports load in transformers."""

import json
import os

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from models.hf_helpers import load_state, random_hf_model, save_hf_dir, torch_logits
from transformers import AutoModelForCausalLM, AutoTokenizer

import easylm_imitate
from easylm_imitate.convert.hf_checkpoint import checkpoint_to_hf_dir, hf_dir_to_checkpoint

PRESETS = ["tiny-llama", "tiny-llama-tied", "tiny-gpt2"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """preset -> (original HF dir, checkpoint dir, exported HF dir)."""
    out = {}
    for preset in PRESETS:
        root = tmp_path_factory.mktemp(preset)
        hf_dir = save_hf_dir(random_hf_model(preset, seed=2), root / "hf")
        ckpt = hf_dir_to_checkpoint(hf_dir, root / "ckpt")
        exported = checkpoint_to_hf_dir(ckpt, root / "export")
        out[preset] = hf_dir, ckpt, exported
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_round_trip_is_bit_exact(converted, preset):
    hf_dir, _, exported = converted[preset]
    before, after = load_state(hf_dir), load_state(exported)
    assert sorted(before) == sorted(after)
    for name, tensor in before.items():
        assert after[name].dtype == np.float32
        assert np.array_equal(tensor, after[name]), name


@pytest.mark.parametrize("preset", PRESETS)
def test_export_loads_in_transformers_with_our_logits(converted, preset):
    _, ckpt, exported = converted[preset]
    model, tokenizer = easylm_imitate.load(ckpt)
    hf = AutoModelForCausalLM.from_pretrained(exported).eval()
    ids = np.random.default_rng(3).integers(0, model.cfg.vocab_size, (2, 12))
    ours = np.asarray(model(jnp.asarray(ids)))
    assert np.abs(torch_logits(hf, ids) - ours).max() <= 1e-4
    # Tokenizer and generation settings travel with the export.
    exported_tok = AutoTokenizer.from_pretrained(exported)
    assert exported_tok("hello world")["input_ids"] == tokenizer("hello world")["input_ids"]
    assert exported_tok.chat_template == tokenizer.chat_template is not None
    with open(os.path.join(exported, "generation_config.json")) as f:
        assert json.load(f)["eos_token_id"] == model.cfg.eos_token_id


def test_sharded_bf16_export_and_sharded_import(converted, tmp_path):
    hf_dir, ckpt, _ = converted["tiny-llama"]
    out = checkpoint_to_hf_dir(ckpt, tmp_path / "sharded", dtype="bfloat16", max_shard_size=40_000)
    with open(os.path.join(out, "model.safetensors.index.json")) as f:
        index = json.load(f)
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not os.path.exists(os.path.join(out, "model.safetensors"))
    for shard in shards:  # a tensor above the limit gets a shard of its own, as in transformers
        names = [n for n, f in index["weight_map"].items() if f == shard]
        assert len(names) == 1 or os.path.getsize(os.path.join(out, shard)) <= 40_000 + 4096
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["dtype"] == "bfloat16"
    original, exported = load_state(hf_dir), load_state(out)
    for name, tensor in original.items():
        assert exported[name].dtype == ml_dtypes.bfloat16
        assert np.array_equal(exported[name], tensor.astype(ml_dtypes.bfloat16)), name
    # The sharded directory imports back to the bf16-rounded weights.
    back, _ = easylm_imitate.load(hf_dir_to_checkpoint(out, tmp_path / "reimported"))
    wq = np.asarray(nnx.state(back, nnx.Param).to_pure_dict()["blocks"]["wq"])
    q0 = original["model.layers.0.self_attn.q_proj.weight"].astype(ml_dtypes.bfloat16).astype(np.float32)
    assert np.array_equal(wq[0], q0.T.reshape(wq.shape[1:]))


def test_export_from_training_run(converted, tmp_path):
    """A training run's latest step exports like a converted checkpoint."""
    from easylm_imitate.train import run_checkpoint

    _, ckpt, exported = converted["tiny-gpt2"]
    model, tokenizer = easylm_imitate.load(ckpt)
    params = nnx.state(model, nnx.Param).to_pure_dict()
    workdir = tmp_path / "run"
    with run_checkpoint.manager(str(workdir)) as mgr:
        run_checkpoint.save(mgr, 7, params, {"count": jnp.zeros((), jnp.int32)}, {"next_index": 0},
                            {"step": 7, "model": model.cfg.to_dict()}, force=True)
        mgr.wait_until_finished()
    tokenizer.save_pretrained(workdir / "tokenizer")
    out = checkpoint_to_hf_dir(workdir, tmp_path / "from_run")
    expected, got = load_state(exported), load_state(out)
    assert sorted(expected) == sorted(got)
    assert all(np.array_equal(expected[k], got[k]) for k in expected)
    assert os.path.isfile(os.path.join(out, "tokenizer.json"))
