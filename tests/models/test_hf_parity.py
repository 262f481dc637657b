"""Our models give the logits of transformers' PyTorch models with the same weights."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from models.hf_helpers import random_hf_model, torch_logits

from easylm_imitate.convert.hf_weights import from_torch_model, params_from_hf

TOL = 1e-4  # max abs difference, float32
PRESETS = ["tiny-llama", "tiny-llama-tied", "tiny-gpt2"]  # GQA + untied head, tied, GPT-2


@pytest.fixture(scope="module")
def pairs():
    """(transformers model, our model) per preset, same random weights."""
    out = {}
    for preset in PRESETS:
        hf = random_hf_model(preset, seed=1)
        out[preset] = hf, from_torch_model(hf)
    return out


def test_presets_cover_gqa_untied_and_tied(pairs):
    llama, tied = pairs["tiny-llama"][1].cfg, pairs["tiny-llama-tied"][1].cfg
    assert llama.kv_heads < llama.num_heads and not llama.tie_embeddings
    assert tied.tie_embeddings


@pytest.mark.parametrize("preset", PRESETS)
def test_logits_match_transformers(pairs, preset):
    hf, ours = pairs[preset]
    ids = np.random.default_rng(0).integers(0, ours.cfg.vocab_size, (2, 24))
    expected = torch_logits(hf, ids)
    got = np.asarray(ours(jnp.asarray(ids)))
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOL


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2"])
def test_left_padded_batch_matches_transformers(pairs, preset):
    hf, ours = pairs[preset]
    rng = np.random.default_rng(1)
    lengths = [16, 9, 3]
    t = max(lengths)
    ids = rng.integers(0, ours.cfg.vocab_size, (len(lengths), t))
    real = np.arange(t)[None, :] >= (t - np.asarray(lengths))[:, None]  # left padding
    positions = np.maximum(np.cumsum(real, axis=1) - 1, 0)
    expected = torch_logits(hf, ids, attention_mask=real.astype(np.int64), position_ids=positions)
    got = np.asarray(ours(jnp.asarray(ids), positions=jnp.asarray(positions),
                          segment_ids=jnp.asarray(real.astype(np.int32))))
    assert np.abs(got[real] - expected[real]).max() <= TOL
    # Padding really is masked: a row alone, unpadded, gives the same logits.
    alone = np.asarray(ours(jnp.asarray(ids[2:, t - lengths[2]:])))
    np.testing.assert_allclose(alone[0], got[2, t - lengths[2]:], atol=1e-5)


@pytest.mark.parametrize("preset", PRESETS)
def test_loss_gradients_match_pytorch_autograd(pairs, preset):
    """Our hand-written backward passes (projections, RMSNorm, LayerNorm, SwiGLU, GELU, RoPE,
    attention) give the gradients PyTorch's autograd gives. 256 tokens: attention runs in
    query chunks."""
    hf, ours = pairs[preset]
    ids = np.random.default_rng(2).integers(0, ours.cfg.vocab_size, (2, 256))
    hf.zero_grad(set_to_none=True)
    hf(torch.from_numpy(ids), labels=torch.from_numpy(ids)).loss.backward()
    torch_grads = {name: p.grad.numpy().copy() for name, p in hf.named_parameters()}
    hf.zero_grad(set_to_none=True)
    expected = params_from_hf(ours.cfg, torch_grads.__getitem__, progress=False)

    graphdef, state = nnx.split(ours)

    def loss(state):
        logits = nnx.merge(graphdef, state)(jnp.asarray(ids))
        return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], jnp.asarray(ids[:, 1:])).mean()

    got = jax.jit(jax.grad(loss))(state).to_pure_dict()

    def check(path, have, want):
        # 1e-4 of the tensor's largest gradient; 1e-6 absolute for GPT-2's key bias, whose
        # true gradient is zero (softmax ignores a constant shift) and both sides give noise.
        tol = max(1e-4 * np.abs(want).max(), 1e-6)
        assert np.abs(np.asarray(have) - want).max() <= tol, (preset, jax.tree_util.keystr(path))

    jax.tree_util.tree_map_with_path(check, got, expected)


def test_config_from_hf_reads_llama_variants_and_rejects_the_rest():
    from transformers import MistralConfig

    from easylm_imitate.convert.hf_config import ConversionError, config_from_hf, config_to_hf

    mistral = MistralConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=None,
                            rope_theta=5e5, tie_word_embeddings=True).to_dict()
    cfg = config_from_hf({**mistral, "architectures": ["MistralForCausalLM"], "eos_token_id": [7, 8]})
    assert (cfg.arch, cfg.kv_heads, cfg.dim_per_head, cfg.rope_theta, cfg.tie_embeddings, cfg.eos_token_id) == \
        ("llama", 2, 32, 5e5, True, 7)
    legacy = {k: v for k, v in config_to_hf(cfg).items() if k != "rope_parameters"}
    assert config_from_hf({**legacy, "rope_theta": 1234.0}).rope_theta == 1234.0
    assert config_from_hf(config_to_hf(cfg)) == cfg
    with pytest.raises(ConversionError, match="BertForMaskedLM"):
        config_from_hf({"architectures": ["BertForMaskedLM"], "model_type": "bert"})
    with pytest.raises(ConversionError, match="rope_type='llama3'"):
        config_from_hf({**config_to_hf(cfg), "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}})
