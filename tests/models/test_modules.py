"""Each layer of a model is a tree of NNX modules (norms, attention, MLP, `Linear`
projections) whose parameters carry logical axis names, built over the stacked parameters
without changing the stored layout."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from easylm_imitate.models import attention, build_model, get_preset

LLAMA_TREE = {
    ("attn_norm", "scale"): ("norm",),
    ("attn", "q_proj", "kernel"): ("embed", "heads", "head_dim"),
    ("attn", "k_proj", "kernel"): ("embed", "kv_heads", "head_dim"),
    ("attn", "v_proj", "kernel"): ("embed", "kv_heads", "head_dim"),
    ("attn", "o_proj", "kernel"): ("heads", "head_dim", "embed"),
    ("mlp_norm", "scale"): ("norm",),
    ("mlp", "gate", "kernel"): ("embed", "mlp"),
    ("mlp", "up", "kernel"): ("embed", "mlp"),
    ("mlp", "down", "kernel"): ("mlp", "embed"),
}
GPT2_PROJECTIONS = {("attn", "q_proj"), ("attn", "k_proj"), ("attn", "v_proj"), ("attn", "o_proj"),
                    ("mlp", "fc"), ("mlp", "proj")}


def _axes_by_path(module):
    return {tuple(str(k) for k in path): tuple(var.logical_axes)
            for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def test_a_llama_layer_is_a_module_tree_with_logical_axes_over_the_stacked_slice():
    model = build_model(get_preset("tiny-llama"), seed=0)
    block = model.layer_module(1)
    assert _axes_by_path(block) == LLAMA_TREE
    assert np.array_equal(np.asarray(block.attn.q_proj.kernel[...]), np.asarray(model.blocks.wq[...][1]))
    assert sorted(nnx.state(model, nnx.Param).to_pure_dict()["blocks"]) == sorted(
        ["attn_norm", "mlp_norm", "w_down", "w_gate", "w_up", "wk", "wo", "wq", "wv"])  # stored layout unchanged


def test_a_gpt2_layer_has_biased_projections_and_layer_norms():
    block = build_model(get_preset("tiny-gpt2"), seed=0).layer_module(0)
    axes = _axes_by_path(block)
    assert {path[:2] for path in axes if path[-1] == "bias" and path[0] in ("attn", "mlp")} == GPT2_PROJECTIONS
    assert axes[("attn_norm", "scale")] == axes[("attn_norm", "bias")] == axes[("mlp_norm", "bias")] == ("norm",)
    assert axes[("attn", "o_proj", "bias")] == ("norm",)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2"])
def test_running_the_layer_modules_one_by_one_is_the_model(preset):
    model = build_model(get_preset(preset), seed=0)
    tokens = (jnp.arange(2 * 16, dtype=jnp.int32).reshape(2, 16) * 5) % model.cfg.vocab_size
    positions = jnp.broadcast_to(jnp.arange(16, dtype=jnp.int32), tokens.shape)
    slots, segments = positions, jnp.ones(tokens.shape, jnp.int32)
    mask = attention.attention_mask(slots, slots, segments, segments)
    x = model.embed(tokens, positions, jnp.float32)
    context = model.block_context(positions)
    for i in range(model.cfg.num_layers):
        x, _ = model.layer_module(i)(x, context, mask, None, jnp.zeros((), jnp.int32))
    np.testing.assert_allclose(np.asarray(model.head(x, jnp.float32)), np.asarray(model(tokens)), rtol=1e-5, atol=1e-5)
