"""The train step's arithmetic: masks, accumulation, the loss as a global token mean."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from easylm_imitate.models import build_model, get_preset
from easylm_imitate.train.step import TrainState, cross_entropy, summed_grads, train_step


def _batch(rng, b=8, t=32, vocab=512):
    weights = (rng.random((b, t)) < 0.5).astype(np.float32)
    weights[:, 0] = 1.0
    return {"inputs": rng.integers(0, vocab, (b, t), dtype=np.int32),
            "targets": rng.integers(0, vocab, (b, t), dtype=np.int32),
            "weights": weights, "segment_ids": np.ones((b, t), np.int32),
            "positions": np.tile(np.arange(t, dtype=np.int32), (b, 1))}


@pytest.fixture(scope="module")
def model_parts():
    graphdef, state = nnx.split(build_model(get_preset("tiny-llama"), 0))
    return graphdef, state.to_pure_dict()


def test_tokens_with_mask_zero_contribute_exactly_zero_gradient(model_parts):
    graphdef, params = model_parts
    batch = _batch(np.random.default_rng(0))
    changed = dict(batch)
    changed["targets"] = np.where(batch["weights"] == 0, (batch["targets"] + 7) % 512, batch["targets"])
    f = jax.jit(lambda p, b: summed_grads(graphdef, p, b, 1))
    g1, m1 = f(params, batch)
    g2, m2 = f(params, changed)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert float(m1["loss_sum"]) == float(m2["loss_sum"])


def test_accumulating_4_micro_batches_of_2_equals_one_batch_of_8(model_parts):
    graphdef, params = model_parts
    optimizer = optax.adamw(1e-3, weight_decay=0.1)
    schedule = optax.constant_schedule(1e-3)
    state = TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))
    batch = _batch(np.random.default_rng(1))
    outs = {}
    for accum in (1, 4):
        step = jax.jit(functools.partial(train_step, graphdef, optimizer, schedule, accum))
        outs[accum] = step(state, batch)
    (s1, m1), (s4, m4) = outs[1], outs[4]
    np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s4.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)


def test_loss_is_the_token_mean_over_the_global_batch(model_parts):
    graphdef, params = model_parts
    batch = _batch(np.random.default_rng(2))
    _, sums = jax.jit(lambda p, b: summed_grads(graphdef, p, b, 1))(params, batch)
    logits = nnx.merge(graphdef, params)(batch["inputs"], positions=batch["positions"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    expected = float((ce * batch["weights"]).sum() / batch["weights"].sum())
    np.testing.assert_allclose(float(sums["loss_sum"] / sums["count"]), expected, rtol=1e-5)


def test_cross_entropy_and_its_gradient_equal_optax():
    rng = np.random.default_rng(3)
    logits = jnp.asarray(rng.standard_normal((3, 5, 97)) * 4, jnp.float32)
    targets = jnp.asarray(rng.integers(0, 97, (3, 5)), jnp.int32)
    cot = jnp.asarray(rng.standard_normal((3, 5)), jnp.float32)

    def run(fn):
        value, vjp = jax.vjp(lambda x: fn(x, targets), logits)
        return value, vjp(cot)[0]

    got, want = run(cross_entropy), run(optax.softmax_cross_entropy_with_integer_labels)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


def test_each_micro_batch_gets_its_own_key_from_the_steps_rng():
    """With `rng`, micro-batch i's loss sees `fold_in(rng, i)` (e.g. its own dropout masks),
    not one key shared by all of a step's micro-batches."""
    def noisy_loss(graphdef, params, batch, rng):
        noise = jax.random.normal(rng, params["w"].shape)
        loss = jnp.sum(params["w"] * noise) * jnp.sum(batch["weights"])
        return loss, {"loss_sum": loss, "count": jnp.sum(batch["weights"]), "correct": jnp.zeros(())}

    params = {"w": jnp.zeros((5,))}
    batch = {"weights": jnp.ones((4, 3))}
    rng = jax.random.key(7)
    grads, _ = summed_grads(None, params, batch, 2, noisy_loss, rng)
    want = sum(6.0 * jax.random.normal(jax.random.fold_in(rng, i), (5,)) for i in range(2))
    np.testing.assert_allclose(np.asarray(grads["w"]), np.asarray(want), rtol=1e-6)
    one, _ = summed_grads(None, params, batch, 1, noisy_loss, rng)
    np.testing.assert_allclose(np.asarray(one["w"]), 12.0 * np.asarray(jax.random.normal(jax.random.fold_in(rng, 0), (5,))),
                               rtol=1e-6)
