"""Pure training/eval step functions: masked token losses as (sum, count), gradient
accumulation over micro-batches, one optimizer update.

A batch is a dict of [batch, seq] arrays: `inputs`, `targets`, `weights` (the loss mask,
1.0 only on assistant tokens), `segment_ids` and `positions`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from easylm_imitate.train import distill


class TrainState(NamedTuple):
    """Everything a step updates: float32 parameters, optimizer state, step counter."""

    params: Any
    opt_state: Any
    step: jax.Array


def loss_terms(graphdef, params, batch, **forward) -> tuple[jax.Array, dict]:
    """Summed cross-entropy over weighted tokens, plus count and correct-token sums.
    `forward`: extra arguments of the model's forward pass (a LoRA run's `blocks`, `adapters`)."""
    model = nnx.merge(graphdef, params)
    logits = model(batch["inputs"], positions=batch["positions"], segment_ids=batch["segment_ids"], **forward)
    weights = batch["weights"].astype(jnp.float32)
    losses = cross_entropy(logits, batch["targets"])
    # A token is correct when its target logit is the largest (argmax over the vocabulary
    # costs ~5x a max on CPU; exact ties, the only difference, do not occur in practice).
    target_logits = jnp.take_along_axis(logits, batch["targets"][..., None], axis=-1)[..., 0]
    correct = (target_logits >= jnp.max(logits, axis=-1)).astype(jnp.float32)
    loss_sum = jnp.sum(losses * weights)
    sums = {"loss_sum": loss_sum, "count": jnp.sum(weights), "correct": jnp.sum(correct * weights)}
    return distill.add_term(loss_sum, sums, logits, batch)  # + alpha x KL to the target (config.distill)


@jax.custom_vjp
def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-token softmax cross-entropy of float32 logits [..., V] against integer targets [...].

    Same values as `optax.softmax_cross_entropy_with_integer_labels`; the backward pass keeps
    the logits and the log-partition only and writes softmax - one-hot in one pass, so no
    array of the vocabulary's width is materialised for the forward pass alone (on CPU,
    ~2% of a SmolLM2 step)."""
    return _cross_entropy_fwd(logits, targets)[0]


def _cross_entropy_fwd(logits, targets):
    lse = jax.nn.logsumexp(logits, axis=-1)
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return lse - target_logits, (logits, targets, lse)


def _cross_entropy_bwd(residuals, g):
    logits, targets, lse = residuals
    one_hot = targets[..., None] == jnp.arange(logits.shape[-1], dtype=targets.dtype)
    return (jnp.exp(logits - lse[..., None]) - one_hot) * g[..., None], None


cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def _split_micro(batch, accum: int):
    """[B, ...] -> [accum, B / accum, ...]; micro-batch i takes rows i, i + accum, ...

    Strided so that the (sharded) leading axis stays the batch axis of every micro-batch.
    """
    def split(x):
        return x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(split, batch)


def summed_grads(graphdef, params, batch, accum: int, loss_fn=None, rng=None):
    """Gradients of the summed loss and the summed metrics, accumulated over `accum` micro-batches.
    `loss_fn(graphdef, params, batch)` replaces `loss_terms` (e.g. LoRA: params are the adapters).
    With `rng` (e.g. a dropout key), `loss_fn` is called with `rng=`: micro-batch i gets
    `fold_in(rng, i)`, so each draws its own masks, as one large batch would."""
    grad_fn = jax.grad(loss_fn or loss_terms, argnums=1, has_aux=True)

    def micro_grads(micro, index):
        if rng is None:
            return grad_fn(graphdef, params, micro)
        return grad_fn(graphdef, params, micro, rng=jax.random.fold_in(rng, index))

    if accum == 1:
        return micro_grads(batch, 0)

    def body(carry, xs):
        grads, sums = carry
        g, m = micro_grads(*xs)
        return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, sums, m)), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    zero_sums = {"loss_sum": 0.0, "count": 0.0, "correct": 0.0}
    zero_sums = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), {**zero_sums, **distill.zero_sums(batch)})
    xs = (_split_micro(batch, accum), jnp.arange(accum, dtype=jnp.int32))
    (grads, sums), _ = jax.lax.scan(body, (zeros, zero_sums), xs)
    return grads, sums


def train_step(graphdef, optimizer: optax.GradientTransformation, schedule, accum: int,
               state: TrainState, batch, skip_nonfinite: bool = False, loss_fn=None,
               rng=None) -> tuple[TrainState, dict]:
    """One update on the global batch: the loss is the token mean over the whole batch.
    `loss_fn` and `rng` as in `summed_grads`.

    `metrics["nonfinite"]` is 1.0 when the loss or the gradient norm is NaN or infinite; with
    `skip_nonfinite` such a step keeps the previous parameters and optimizer state."""
    grads, sums = summed_grads(graphdef, state.params, batch, accum, loss_fn, rng)
    count = jnp.maximum(sums["count"], 1.0)
    grads = jax.tree.map(lambda g: g / count, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    loss, grad_norm = sums["loss_sum"] / count, optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if skip_nonfinite:
        keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
    metrics = {
        "loss": loss,
        "accuracy": sums["correct"] / count,
        "tokens": sums["count"],
        "grad_norm": grad_norm,
        "learning_rate": schedule(state.step),
        "nonfinite": 1.0 - finite.astype(jnp.float32),
        **distill.metrics(sums),
    }
    return TrainState(params, opt_state, state.step + 1), metrics


def eval_step(graphdef, params, batch) -> dict:
    """Summed loss, correct tokens and token count of one batch (no update)."""
    _, sums = loss_terms(graphdef, params, batch)
    return sums
