"""Shared inputs and references for the attention tests: packed rows with padding, a plain
float32 softmax attention under a dense mask, and the dense mask the model built before the
mask object."""

import jax
import jax.numpy as jnp
import numpy as np

from easylm_imitate.models import attention

# Two packed rows: row 0 holds three examples then padding, row 1 one example then padding.
T = 256
SEGMENTS = np.zeros((2, T), np.int32)
SEGMENTS[0, :90], SEGMENTS[0, 90:150], SEGMENTS[0, 150:230] = 1, 2, 3
SEGMENTS[1, :200] = 1


def inputs(dtype=jnp.float32, t=T, heads=4, kv_heads=2, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s), dtype) for s in
            [(2, t, heads, d), (2, t, kv_heads, d), (2, t, kv_heads, d), (2, t, heads, d)]]


def reference(q, k, v, dense):
    """Plain float32 softmax attention under a dense mask [B,1,Tq,Tk] (GQA by repeating k/v)."""
    r = q.shape[2] // k.shape[2]
    k, v = (jnp.repeat(x.astype(jnp.float32), r, axis=2) for x in (k, v))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k) * q.shape[-1] ** -0.5
    probs = jax.nn.softmax(jnp.where(dense, scores, -1e30), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def dense_mask(q_slots, kv_slots, q_seg, kv_seg):
    """The dense mask as the model built it before the mask object: causal over slots, same segment."""
    return ((q_slots[:, :, None] >= kv_slots[:, None, :]) & (q_seg[:, :, None] == kv_seg[:, None, :]))[:, None]


def value_and_grads(fn, q, k, v, cotangent):
    loss = lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * cotangent)  # noqa: E731
    out = jax.jit(fn)(q, k, v)
    return (out, *jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v))


def self_mask():
    slots = jnp.broadcast_to(jnp.arange(T), (2, T))
    seg = jnp.asarray(SEGMENTS)
    return attention.attention_mask(slots, slots, seg, seg), dense_mask(slots, slots, seg, seg)
