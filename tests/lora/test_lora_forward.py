"""The LoRA forward pass the train and eval steps run: adapters added per layer inside the
layer scan (unmerged, as peft trains), a quantised base dequantised there, and input dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from easylm_imitate.lora import adapters as A
from easylm_imitate.lora import step as lora_step
from lora.test_adapters import lora_cfg, model_and_projections, with_params

IDS = (jnp.arange(2 * 24, dtype=jnp.int32).reshape(2, 24) * 7) % 512
BATCH = {"inputs": IDS, "targets": jnp.roll(IDS, -1, axis=1), "weights": jnp.ones(IDS.shape, jnp.float32),
         "segment_ids": jnp.ones(IDS.shape, jnp.int32), "positions": jnp.broadcast_to(jnp.arange(24), IDS.shape)}


def trained_looking_adapters(spec):
    """Adapters with B no longer zero, so they change the model."""
    fresh = A.init_adapters(spec, seed=0)
    leaves, tree = jax.tree.flatten(fresh)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def lora_logits(model, base, adapters, spec, key=None):
    graphdef, _ = nnx.split(model)
    params, forward = lora_step.model_inputs(base, adapters, spec, key)
    return nnx.merge(graphdef, params)(IDS, **forward)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2"])
def test_unmerged_adapters_in_the_scan_equal_the_merged_weights(preset):
    model, projs = model_and_projections(preset)
    spec = A.make_spec(lora_cfg(), projs)
    params = nnx.state(model).to_pure_dict()
    adapters = trained_looking_adapters(spec)
    merged = with_params(model, A.merged_params(params, adapters, spec))(IDS)
    got = lora_logits(model, params, adapters, spec)
    assert float(jnp.max(jnp.abs(merged - model(IDS)))) > 1e-2  # the adapters matter
    np.testing.assert_allclose(np.asarray(got), np.asarray(merged), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_quantised_base_dequantised_per_layer_equals_dequantising_it_whole(kind):
    model, projs = model_and_projections()
    spec = A.make_spec(lora_cfg(base_dtype=kind), projs)
    stored = A.store_base(nnx.state(model).to_pure_dict(), spec)
    adapters = trained_looking_adapters(spec)
    whole = with_params(model, A.merged_params(stored, adapters, spec))(IDS)
    np.testing.assert_allclose(np.asarray(lora_logits(model, stored, adapters, spec)), np.asarray(whole),
                               rtol=1e-4, atol=1e-4)


def test_dropout_masks_follow_the_key_and_evaluation_has_none():
    model, projs = model_and_projections()
    spec = A.make_spec(lora_cfg(dropout=0.5), projs)
    no_dropout = A.make_spec(lora_cfg(), projs)
    params = nnx.state(model).to_pure_dict()
    adapters = trained_looking_adapters(spec)
    plain = lora_logits(model, params, adapters, no_dropout)
    assert np.array_equal(np.asarray(lora_logits(model, params, adapters, spec)), np.asarray(plain))  # eval: no key
    step0, step1 = (lora_step.dropout_key(0, s) for s in (0, 1))
    a = lora_logits(model, params, adapters, spec, step0)
    assert np.array_equal(np.asarray(a), np.asarray(lora_logits(model, params, adapters, spec, step0)))
    assert not np.allclose(np.asarray(a), np.asarray(plain), atol=1e-3)
    assert not np.allclose(np.asarray(a), np.asarray(lora_logits(model, params, adapters, spec, step1)), atol=1e-3)
    # Dropout falls on the adapters' input only: with B = 0 the model is the base whatever the mask.
    fresh = A.init_adapters(spec, seed=0)
    np.testing.assert_allclose(np.asarray(lora_logits(model, params, fresh, spec, step0)), np.asarray(model(IDS)),
                               rtol=1e-5, atol=1e-5)


def test_dropout_changes_the_adapters_gradient_and_keeps_it_finite():
    model, projs = model_and_projections()
    spec = A.make_spec(lora_cfg(dropout=0.5, targets="q"), projs)
    params = nnx.state(model).to_pure_dict()
    adapters = trained_looking_adapters(spec)
    graphdef, _ = nnx.split(model)
    key = lora_step.dropout_key(0, 3)
    grads, _ = jax.grad(lora_step.lora_loss_terms, argnums=1, has_aux=True)(graphdef, adapters, BATCH, base=params,
                                                                              spec=spec, rng=key)
    no_key, _ = jax.grad(lora_step.lora_loss_terms, argnums=1, has_aux=True)(graphdef, adapters, BATCH, base=params,
                                                                                spec=spec)
    ga, ga_plain = np.asarray(grads["blocks"]["wq"]["lora_a"]), np.asarray(no_key["blocks"]["wq"]["lora_a"])
    assert np.all(np.isfinite(ga)) and np.abs(ga).max() > 0
    assert not np.allclose(ga, ga_plain, rtol=1e-2)
