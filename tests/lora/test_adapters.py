"""Adapters and the quantised base, as units: which projections exist, how adapters shard,
what the merged weight is, and how close int8 / nf4 keep the model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from easylm_imitate import parallel
from easylm_imitate.lora import adapters as A
from easylm_imitate.lora import quant
from easylm_imitate.models import build_model, get_preset


def lora_cfg(**kw):
    base = dict(rank=4, alpha=8.0, dropout=0.0, targets="q|k|v|o|gate|up|down", init="gaussian",
                base_dtype="float32")
    return ml_collections.ConfigDict({**base, **kw})


def model_and_projections(preset="tiny-llama", seed=0):
    model = build_model(get_preset(preset), seed)
    return model, A.find_projections(nnx.state(model))


def with_params(model, params):
    graphdef, state = nnx.split(model)
    state.replace_by_pure_dict(params)
    return nnx.merge(graphdef, state)


def test_projections_found_from_paths_and_axes():
    _, llama = model_and_projections()
    assert {(p.key, p.name, p.in_dims) for p in llama} == {
        ("blocks/wq", "q", 1), ("blocks/wk", "k", 1), ("blocks/wv", "v", 1), ("blocks/wo", "o", 2),
        ("blocks/w_gate", "gate", 1), ("blocks/w_up", "up", 1), ("blocks/w_down", "down", 1)}
    _, gpt2 = model_and_projections("tiny-gpt2")  # position embeddings and biases are not projections
    assert {p.name for p in gpt2} == {"q", "k", "v", "o", "up", "down"}


def test_targets_matching_nothing_name_the_projections_that_exist():
    _, projs = model_and_projections()
    with pytest.raises(A.LoraConfigError) as e:
        A.make_spec(lora_cfg(targets="query|value"), projs)
    msg = str(e.value)
    assert msg.startswith("lora.targets: 'query|value' matches no projection")
    for name in ("down", "gate", "k", "o", "q", "up", "v"):
        assert name in msg
    assert {p.name for p in A.make_spec(lora_cfg(targets="q|v"), projs).targets} == {"q", "v"}


@pytest.mark.parametrize("rules", sorted(parallel.RULES))
def test_adapters_shard_like_their_projection(rules):
    _, projs = model_and_projections()
    spec = A.make_spec(lora_cfg(), projs)
    mesh = parallel.make_mesh("dp:1,fsdp:4,tp:2")
    table = parallel.rules_for(rules)
    for p in spec.targets:
        w = parallel.logical_to_spec(p.axes, table, p.shape, mesh)
        shapes, axes = p.adapter_shapes(spec.rank), p.adapter_axes()
        a = parallel.logical_to_spec(axes["lora_a"], table, shapes["lora_a"], mesh)
        b = parallel.logical_to_spec(axes["lora_b"], table, shapes["lora_b"], mesh)
        ins = slice(p.lead, p.lead + p.in_dims)
        assert tuple(a)[ins] == tuple(w)[ins] and tuple(a)[-1] is None, (p.key, a, w)
        assert tuple(b)[p.lead + 1:] == tuple(w)[p.lead + p.in_dims:] and tuple(b)[p.lead] is None, (p.key, b, w)


def test_fresh_adapters_leave_the_model_unchanged_and_merge_is_w_plus_scaled_ab():
    model, projs = model_and_projections()
    spec = A.make_spec(lora_cfg(), projs)
    params = nnx.state(model).to_pure_dict()
    adapters = A.init_adapters(spec, seed=0)
    same = A.merged_params(params, adapters, spec)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        got = same
        for k in path:
            got = got[k.key]
        assert np.array_equal(np.asarray(got), np.asarray(leaf))
    adapters = jax.tree.map(lambda x: x + 0.01 * jax.random.normal(jax.random.key(1), x.shape), adapters)
    merged = A.merged_params(params, adapters, spec)
    wo = np.asarray(params["blocks"]["wo"])  # [layers, heads, head_dim, embed]: two input axes
    a, b = (np.asarray(adapters["blocks"]["wo"][k]) for k in ("lora_a", "lora_b"))
    for layer in range(wo.shape[0]):
        delta = a[layer].reshape(-1, spec.rank) @ b[layer].reshape(spec.rank, -1)
        want = wo[layer] + spec.scale * delta.reshape(wo.shape[1:])
        np.testing.assert_allclose(np.asarray(merged["blocks"]["wo"][layer]), want, rtol=1e-5, atol=1e-6)
    assert np.array_equal(np.asarray(merged["embed_tokens"]), np.asarray(params["embed_tokens"]))


# Measured on tiny-llama (seed 0, 24 tokens): relative RMS error of the logits 0.008 (int8),
# 0.13 (nf4); of the weights 0.006 and 0.092. Tolerances leave ~2x room.
TOLERANCE = {"int8": (0.012, 0.02), "nf4": (0.12, 0.25)}


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_quantised_base_stays_close_to_the_float_model(kind):
    model, projs = model_and_projections()
    spec = A.make_spec(lora_cfg(base_dtype=kind), projs)
    params = nnx.state(model).to_pure_dict()
    stored = A.store_base(params, spec)
    weight_tol, logit_tol = TOLERANCE[kind]
    for p in projs:
        q = stored["blocks"][p.path[-1]]
        assert isinstance(q, quant.QuantizedArray)
        w = np.asarray(params["blocks"][p.path[-1]])
        err = np.asarray(q.dequantize(jnp.float32)) - w
        assert np.sqrt(np.mean(err ** 2) / np.mean(w ** 2)) < weight_tol, p.key
        bits_per_weight = 8 * q.nbytes / w.size
        if kind == "int8":  # one float32 scale per output channel
            assert bits_per_weight < 8.6, (p.key, bits_per_weight)
        else:  # 4-bit codes plus one float32 scale per block along the last input axis
            block = np.gcd(p.shape[p.lead + p.in_dims - 1], quant.NF4_BLOCK)
            assert bits_per_weight == 4 + 32 / block, (p.key, bits_per_weight)
    ids = jnp.arange(24, dtype=jnp.int32)[None] * 7 % 512
    ref = model(ids)
    got = with_params(model, A.merged_params(stored, A.init_adapters(spec, 0), spec))(ids)
    rel = float(jnp.sqrt(jnp.mean((got - ref) ** 2) / jnp.mean((ref - ref.mean()) ** 2)))
    assert 0 < rel < logit_tol, rel
