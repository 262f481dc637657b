"""Distillation's KL term (train/distill.py) against a numpy reference, alone and inside the
train step (gradient accumulation included)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from easylm_imitate.models import build_model, get_preset
from easylm_imitate.train import distill
from easylm_imitate.train.step import TrainState, loss_terms, train_step


def numpy_kl(logits, ids, target_lp, slot_mask):
    """KL(target top-K renormalised || student on those ids renormalised), position by position."""
    out = np.zeros(ids.shape[:-1])
    for pos in np.ndindex(*ids.shape[:-1]):
        keep = slot_mask[pos] > 0
        if not keep.any():
            continue
        t = target_lp[pos][keep].astype(np.float64)
        s = logits[pos][ids[pos][keep]].astype(np.float64)
        p = np.exp(t) / np.exp(t).sum()
        q = np.exp(s) / np.exp(s).sum()
        out[pos] = float(np.sum(p * np.log(p / q)))
    return out


def hand_made(rng, batch=2, seq=5, vocab=17, k=4):
    """Logits and a target top-K with some slots and one whole position unset."""
    logits = rng.normal(size=(batch, seq, vocab)).astype(np.float32) * 3
    ids = np.stack([[rng.choice(vocab, k, replace=False) for _ in range(seq)] for _ in range(batch)]).astype(np.int32)
    target = np.sort(rng.normal(size=(batch, seq, k)), axis=-1)[..., ::-1].astype(np.float32) - 1.0
    mask = np.ones((batch, seq, k), np.float32)
    mask[0, 1, 2:] = 0  # a position with only two alternatives
    mask[1, 3] = 0  # a position without a target distribution
    return logits, ids, target, mask


def test_kl_equals_numpy_reference():
    logits, ids, target, mask = hand_made(np.random.default_rng(0))
    got = np.asarray(distill.kl_per_position(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(target),
                                             jnp.asarray(mask)))
    want = numpy_kl(logits, ids, target, mask)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got[1, 3] == 0.0 and (want > 0).sum() == want.size - 1
    # the same distribution for the student gives zero KL
    same = np.zeros_like(logits)
    np.put_along_axis(same, ids, target, axis=-1)
    np.testing.assert_allclose(distill.kl_per_position(jnp.asarray(same), jnp.asarray(ids), jnp.asarray(target),
                                                       jnp.asarray(mask)), 0.0, atol=1e-6)


def _tiny_batch(rng, cfg, batch=4, seq=8, k=3, alpha=0.5):
    inputs = rng.integers(0, cfg.vocab_size, (batch, seq)).astype(np.int32)
    targets = rng.integers(0, cfg.vocab_size, (batch, seq)).astype(np.int32)
    weights = (rng.random((batch, seq)) < 0.7).astype(np.float32)
    ids = np.stack([[rng.choice(cfg.vocab_size, k, replace=False) for _ in range(seq)]
                    for _ in range(batch)]).astype(np.int32)
    target_lp = np.log(rng.dirichlet(np.ones(k), (batch, seq))).astype(np.float32)
    mask = (rng.random((batch, seq, k)) < 0.8).astype(np.float32)
    has = mask.any(-1) & (weights > 0)
    return {"inputs": inputs, "targets": targets, "weights": weights,
            "segment_ids": np.ones((batch, seq), np.int32), "positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1)),
            "distill_ids": ids, "distill_logprobs": target_lp, "distill_mask": mask,
            "distill_weights": np.where(has, alpha, 0.0).astype(np.float32)}


def test_train_step_adds_alpha_kl_on_the_loss_mask_and_logs_distill_kl():
    cfg = get_preset("tiny-llama")
    graphdef, params = nnx.split(build_model(cfg, 0))
    params = params.to_pure_dict()
    batch = _tiny_batch(np.random.default_rng(1), cfg)
    model = nnx.merge(graphdef, params)
    logits = np.asarray(model(batch["inputs"], positions=batch["positions"], segment_ids=batch["segment_ids"]))
    kl = numpy_kl(logits, batch["distill_ids"], batch["distill_logprobs"], batch["distill_mask"])
    on = batch["distill_weights"] > 0
    plain = {k: v for k, v in batch.items() if k not in distill.KEYS}

    objective, sums = loss_terms(graphdef, params, batch)
    plain_objective, plain_sums = loss_terms(graphdef, params, plain)
    assert set(plain_sums) == {"loss_sum", "count", "correct"}
    np.testing.assert_allclose(sums["loss_sum"], plain_objective, rtol=1e-6)  # the CE itself is unchanged
    np.testing.assert_allclose(objective, plain_objective + 0.5 * kl[on].sum(), rtol=1e-5)
    np.testing.assert_allclose(sums["distill_count"], on.sum())

    optimizer = optax.sgd(0.1)
    state = TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))
    schedule = optax.constant_schedule(0.1)
    _, m1 = train_step(graphdef, optimizer, schedule, 1, state, batch)
    _, m2 = train_step(graphdef, optimizer, schedule, 2, state, batch)
    _, m0 = train_step(graphdef, optimizer, schedule, 1, state, plain)
    np.testing.assert_allclose(m1["distill_kl"], kl[on].mean(), rtol=1e-5)
    np.testing.assert_allclose(m2["distill_kl"], m1["distill_kl"], rtol=1e-5)
    np.testing.assert_allclose(m1["loss"], m0["loss"], rtol=1e-6)  # `loss` stays the imitation loss
    assert "distill_kl" not in m0
    assert float(m1["grad_norm"]) != float(m0["grad_norm"])  # the KL has a gradient
