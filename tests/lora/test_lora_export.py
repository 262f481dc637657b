"""Exports of a LoRA run: merged into a plain HF model (transformers) and as a peft adapter on
the HF base; both give our adapted model's logits within 1e-4 (float32)."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import easylm_imitate
from easylm_imitate import checkpoint
from easylm_imitate.assets import asset_path
from easylm_imitate.models import build_model, get_preset
from support.train_helpers import REPO, run_train

IDS = np.array([[1, 17, 250, 3, 99, 411, 7, 8, 300, 42, 5, 6]], np.int32)


def _train(root, preset: str, *flags: str):
    """(base checkpoint, trained LoRA run) of a tiny preset (random weights, seed 1)."""
    cfg = get_preset(preset)
    base = checkpoint.save_params(root / "base", cfg, nnx.state(build_model(cfg, seed=1)).to_pure_dict(),
                                  tokenizer=asset_path("tiny_tokenizer"))
    run = root / "run"
    run_train(str(run), f"--config.init_from={base}", "--config.lora.rank=4", "--config.lora.alpha=8",
              "--config.total_steps=6", "--config.save_every_steps=6", "--config.eval_every_steps=0",
              "--config.learning_rate=1e-2", "--config.optimizer.warmup_steps=0", *flags, devices=1)
    return base, run


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """(base checkpoint, trained LoRA run) on tiny-llama (untied head, GQA)."""
    return _train(tmp_path_factory.mktemp("lora_export"), "tiny-llama")


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    """A tiny-gpt2 LoRA run on q, v (packed in HF's c_attn with k, which has none) and down
    (mlp.c_proj; the attention's c_proj has none)."""
    return _train(tmp_path_factory.mktemp("lora_gpt2"), "tiny-gpt2", "--config.lora.targets=q|v|down")


def our_logits(run) -> np.ndarray:
    """Logits of the run's adapted model as the eval step computes them (base, plus each
    adapter's unmerged term inside the layer scan)."""
    from easylm_imitate.api import abstract_model
    from easylm_imitate.lora.load import read_run
    from easylm_imitate.lora.step import model_inputs

    _, _, cfg, spec, base, adapters = read_run(str(run))
    graphdef, _ = abstract_model(cfg)
    params, forward = model_inputs(base, adapters, spec, key=None)
    return np.asarray(nnx.merge(graphdef, params)(jnp.asarray(IDS), **forward))


def export(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "easylm_imitate.convert.checkpoint_to_hf", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def hf_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(IDS.astype(np.int64))).logits.float().numpy()


def test_merged_export_loads_in_transformers_with_our_logits(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    _, run = lora_run
    refused = export(f"--checkpoint={run}", f"--out={tmp_path / 'plain'}")
    assert refused.returncode == 1
    assert "is a LoRA run: pass --merge_lora" in refused.stderr.strip().splitlines()[-1]
    proc = export(f"--checkpoint={run}", f"--out={tmp_path / 'merged'}", "--merge_lora")
    assert proc.returncode == 0, proc.stderr[-2000:]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", torch_dtype=torch.float32).eval()
    ours = our_logits(run)
    frozen = np.asarray(easylm_imitate.load(str(lora_run[0]))[0](jnp.asarray(IDS)))
    assert np.abs(ours - frozen).max() > 1e-3  # the adapters changed the model
    np.testing.assert_allclose(hf_logits(hf), ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize("which", ["lora_run", "gpt2_run"])
def test_peft_export_loads_onto_the_hf_base_with_our_logits(which, request, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from easylm_imitate.convert.hf_checkpoint import checkpoint_to_hf_dir

    base, run = request.getfixturevalue(which)
    checkpoint_to_hf_dir(str(base), str(tmp_path / "base_hf"))
    proc = export(f"--checkpoint={run}", f"--out={tmp_path / 'adapter'}", "--peft")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json",
                                                                       "adapter_model.safetensors"]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "base_hf", torch_dtype=torch.float32).eval()
    ours, base_only = our_logits(run), hf_logits(hf)
    assert np.abs(base_only - ours).max() > 1e-3  # without the adapter the HF base is another model
    peft_model = PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    np.testing.assert_allclose(hf_logits(peft_model), ours, atol=1e-4, rtol=0)


def test_eval_backend_and_sharded_load_take_the_lora_run_directory(lora_run):
    import jax

    from easylm_imitate import parallel
    from easylm_imitate.evaluation.checkpoint_backend import CheckpointBackend

    base, run = lora_run
    mesh = parallel.make_mesh("dp:1,fsdp:2,tp:1", jax.devices()[:2])
    sharded, _ = easylm_imitate.load(str(run), mesh=mesh)
    np.testing.assert_allclose(np.asarray(sharded(jnp.asarray(IDS))), our_logits(run), atol=1e-5, rtol=0)
    backend = CheckpointBackend(str(run), batch_size=2)  # what the eval binaries and the server load through
    frozen = CheckpointBackend(str(base), batch_size=2)
    request = [("Hello there", " friend")]
    ours, theirs = backend.loglikelihood(request)[0][0], frozen.loglikelihood(request)[0][0]
    assert ours != theirs  # the backend scores with the adapted model, not the base


def test_init_from_a_lora_run_starts_from_the_merged_model(lora_run):
    import types

    from easylm_imitate import checkpoint as ckpt
    from easylm_imitate.api import abstract_model
    from easylm_imitate.train.state import params_from

    _, run = lora_run
    merged, _ = easylm_imitate.load(str(run))
    _, abstract = abstract_model(merged.cfg)
    shapes = abstract.to_pure_dict()
    got = params_from(str(run), types.SimpleNamespace(params_shapes=shapes,
                                                      params_shardings=ckpt.single_device_shardings(shapes)))
    want = nnx.state(merged).to_pure_dict()
    flat_got, flat_want = (jax.tree_util.tree_flatten_with_path(t)[0] for t in (got, want))
    assert [p for p, _ in flat_got] == [p for p, _ in flat_want]
    for (path, a), (_, b) in zip(flat_got, flat_want):
        assert np.array_equal(np.asarray(a), np.asarray(b)), path
