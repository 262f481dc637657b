"""Distillation from the target's top-K log-probabilities (`config.distill`).

With `config.distill.alpha > 0` the packed batch carries, per position, the target's top-K
token ids and log-probs (`distill_ids`, `distill_logprobs` [B, S, K]), which of the K slots
are set (`distill_mask`) and the KL weight of the position (`distill_weights` [B, S]: alpha
on loss-mask tokens that have a target distribution, else 0). The loss adds

    sum over positions of distill_weights * KL(p || q)

to the summed cross-entropy (both are divided by the batch's loss-token count), where p is
the target's top-K renormalised (softmax of its log-probs over the set slots) and q the
student's distribution restricted to those K token ids and renormalised. The metric
`distill_kl` is the mean KL over the positions that have one. Batches without these keys
(distillation off) are untouched.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

KEYS = ("distill_ids", "distill_logprobs", "distill_mask", "distill_weights")
SUMS = ("distill_kl_sum", "distill_count")


def enabled(d) -> bool:
    """True if `config.distill` (given as `d`, or None) asks for distillation (alpha > 0);
    ValueError naming the field on bad values."""
    if d is None:
        return False
    if d.alpha < 0:
        raise ValueError(f"config.distill.alpha: must be >= 0 (0 = off), got {d.alpha}")
    if d.alpha > 0 and not 1 <= d.top_k <= 20:
        raise ValueError(f"config.distill.top_k: must be 1-20 (the API's top_logprobs range), got {d.top_k}")
    return d.alpha > 0


def row_extras(top_ids: np.ndarray, top_logprobs: np.ndarray, slot_mask: np.ndarray, mask, alpha: float) -> dict:
    """Per-token arrays of one rendered example, named as the batch carries them."""
    has = slot_mask.any(axis=-1) & (np.asarray(mask) > 0)
    return {"distill_ids": top_ids, "distill_logprobs": top_logprobs, "distill_mask": slot_mask,
            "distill_weights": np.where(has, np.float32(alpha), np.float32(0)).astype(np.float32)}


def kl_per_position(logits: jax.Array, ids: jax.Array, target_logprobs: jax.Array, slot_mask: jax.Array) -> jax.Array:
    """KL(target top-K renormalised || student restricted to those ids, renormalised) [B, S].

    logits [B, S, V]; ids, target_logprobs, slot_mask [B, S, K]. Positions with no set slot give 0."""
    valid = slot_mask > 0
    neg = jnp.float32(-1e30)
    student = jnp.take_along_axis(logits.astype(jnp.float32), ids, axis=-1)
    student = jnp.where(valid, student, neg)
    student = student - jax.nn.logsumexp(student, axis=-1, keepdims=True)
    target = jnp.where(valid, target_logprobs.astype(jnp.float32), neg)
    target = target - jax.nn.logsumexp(target, axis=-1, keepdims=True)
    p = jnp.where(valid, jnp.exp(target), 0.0)
    kl = jnp.sum(jnp.where(valid, p * (target - student), 0.0), axis=-1)
    return jnp.where(valid.any(axis=-1), kl, 0.0)


def add_term(objective: jax.Array, sums: dict, logits: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
    """(objective + the weighted KL sum, sums + `distill_kl_sum` and `distill_count`); both
    unchanged when the batch carries no target distributions."""
    if "distill_ids" not in batch:
        return objective, sums
    kl = kl_per_position(logits, batch["distill_ids"], batch["distill_logprobs"], batch["distill_mask"])
    w = batch["distill_weights"].astype(jnp.float32)
    on = (w > 0).astype(jnp.float32)
    return objective + jnp.sum(w * kl), {**sums, "distill_kl_sum": jnp.sum(on * kl), "distill_count": jnp.sum(on)}


def zero_sums(batch: dict) -> dict:
    """The distillation sums' starting values for gradient accumulation (none when off)."""
    return {k: jnp.zeros((), jnp.float32) for k in SUMS} if "distill_ids" in batch else {}


def metrics(sums: dict) -> dict:
    """`distill_kl`: mean KL over the positions with a target distribution (none when off)."""
    if "distill_kl_sum" not in sums:
        return {}
    return {"distill_kl": sums["distill_kl_sum"] / jnp.maximum(sums["distill_count"], 1.0),
            "distill_tokens": sums["distill_count"]}
