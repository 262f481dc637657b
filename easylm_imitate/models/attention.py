"""Attention: masks, grouped-query softmax attention (head-major batched matmuls), the
causal query-chunked variant for training, and attention over a head-major KV cache.

The XLA path has a hand-written backward pass in the manner of flash attention: it keeps the
inputs, the output and each query's log-sum-exp, and recomputes the probabilities."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

NEG_INF = -1e30
# Query chunk of `causal_self_attention` (128 measured best for 512 tokens on CPU).
CAUSAL_CHUNK = 128


def attention_mask(q_slots: jax.Array, kv_slots: jax.Array, q_segments: jax.Array,
                   kv_segments: jax.Array) -> jax.Array:
    """Boolean mask [B, 1, Tq, Tk]: causal over slots and same segment only.

    Slots are positions in the (possibly cached) sequence buffer; segment 0 marks padding,
    which real tokens never attend to.
    """
    causal = q_slots[:, :, None] >= kv_slots[:, None, :]
    same = q_segments[:, :, None] == kv_segments[:, None, :]
    return (causal & same)[:, None, :, :]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, impl: str) -> jax.Array:
    """Grouped-query attention. q [B,Tq,H,D], k/v [B,Tk,Hkv,D], mask [B,1,Tq,Tk] -> [B,Tq,H,D].

    `impl` is 'xla' (explicit einsums with a float32 softmax), 'dot_product'
    (`jax.nn.dot_product_attention` compiled by XLA on every backend: the full score matrix,
    JAX's own autodiff) or 'cudnn' (the same function's cuDNN flash-attention kernel: GPU
    only, bfloat16/float16 inputs). JAX does not pick cuDNN by itself: its default
    implementation is XLA, so GPU runs that want the fused kernel ask for 'cudnn'.
    """
    if impl in ("dot_product", "cudnn"):
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=q.shape[-1] ** -0.5,
                                            implementation="cudnn" if impl == "cudnn" else "xla")
    qh, kh, vh = _to_head_major(q, k, v)
    return _from_head_major(_head_major_attention(qh, kh, vh, mask))


def cached_kv_attention(q: jax.Array, kh: jax.Array, vh: jax.Array, mask: jax.Array, impl: str) -> jax.Array:
    """`attention` with keys/values already head-major, as a KV cache stores them:
    q [B,Tq,H,D], kh/vh [B,Hkv,Tk,D] -> [B,Tq,H,D]."""
    if impl != "xla":
        return attention(q, kh.transpose(0, 2, 1, 3), vh.transpose(0, 2, 1, 3), mask, impl)
    return _from_head_major(_head_major_attention(_queries_head_major(q, kh.shape[1]), kh, vh, mask))


def _queries_head_major(q, hkv: int):
    """q [B,T,H,D] -> [B,Hkv,H/Hkv,T,D]: grouped by the key/value head each query head reads."""
    b, t, h, d = q.shape
    return q.reshape(b, t, hkv, h // hkv, d).transpose(0, 2, 3, 1, 4)


def _to_head_major(q, k, v):
    """q as `_queries_head_major`; k, v [B,T,Hkv,D] -> [B,Hkv,T,D] (batched-matmul friendly:
    the score and value products then need no per-call transposes)."""
    return _queries_head_major(q, k.shape[2]), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)


def _from_head_major(out):
    """[B,Hkv,R,T,D] -> [B,T,Hkv*R,D]."""
    b, hkv, r, t, d = out.shape
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, hkv * r, d)


@jax.custom_vjp
def _head_major_attention(qh, kh, vh, mask):
    """Softmax attention on head-major inputs; mask [B,1,Tq,Tk]; float32 scores.

    The backward pass keeps the inputs, the output and each query's log-sum-exp, and
    recomputes the probabilities from them, as flash attention does (autodiff of the plain
    expression saves the masked scores, their exponentials and the probabilities: on CPU,
    storing those for every layer cost more than recomputing the score product, ~6% of a
    SmolLM2 step)."""
    return _attention_fwd(qh, kh, vh, mask)[0]


def _scaled(qh):
    """Queries times 1/sqrt(head_dim): scaling the small query tensor instead of the scores."""
    return qh * jnp.asarray(qh.shape[-1] ** -0.5, qh.dtype)


def _masked_scores(qs, kh, mask):
    """Float32 scores [B,Hkv,R,Tq,Tk] of scaled queries, masked positions at NEG_INF."""
    scores = jnp.einsum("bgrqd,bgkd->bgrqk", qs, kh, preferred_element_type=jnp.float32)
    return jnp.where(mask[:, :, None], scores, NEG_INF)


def _attention_forward(qs, kh, vh, mask):
    """(output, log-sum-exp of each query's scores) for scaled queries.

    The value product takes the unnormalised exponentials and the output is divided by
    their sum afterwards: one pass less over the score-sized arrays than normalising the
    probabilities first (on CPU the forward pass takes about half the time)."""
    scores = _masked_scores(qs, kh, mask)
    peak = jnp.max(scores, axis=-1, keepdims=True)
    weights = jnp.exp(scores - peak)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum("bgrqk,bgkd->bgrqd", weights.astype(vh.dtype), vh, preferred_element_type=jnp.float32)
    return (out / total).astype(vh.dtype), peak + jnp.log(total)


def _attention_fwd(qh, kh, vh, mask):
    out, lse = _attention_forward(_scaled(qh), kh, vh, mask)
    return out, (qh, kh, vh, mask, lse, out)


def _attention_bwd(residuals, g):
    qh, kh, vh, mask, lse, out = residuals
    dqs, dk, dv = _attention_grads(_scaled(qh), kh, vh, mask, lse, out, g)
    return _scaled(dqs).astype(qh.dtype), dk.astype(kh.dtype), dv.astype(vh.dtype), None


def _attention_grads(qs, kh, vh, mask, lse, out, g):
    """Gradients of `_attention_forward`'s output for the scaled queries, k and v, from its
    saved log-sum-exp and output (softmax's backward term sum(dP * P) equals sum(dO * O),
    which needs no pass over the score-sized arrays). All three come back in float32 (one
    rounding at the end; callers summing dK/dV over query chunks accumulate in float32)."""
    probs = jnp.exp(_masked_scores(qs, kh, mask) - lse)
    dv = jnp.einsum("bgrqk,bgrqd->bgkd", probs.astype(vh.dtype), g, preferred_element_type=jnp.float32)
    dp = jnp.einsum("bgrqd,bgkd->bgrqk", g, vh, preferred_element_type=jnp.float32)
    row = jnp.sum(g.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    ds = probs * (dp - row)
    dqs = jnp.einsum("bgrqk,bgkd->bgrqd", ds.astype(kh.dtype), kh, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bgrqk,bgrqd->bgkd", ds.astype(qs.dtype), qs, preferred_element_type=jnp.float32)
    return dqs, dk, dv


_head_major_attention.defvjp(_attention_fwd, _attention_bwd)


def causal_self_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, impl: str,
                          chunk: int = CAUSAL_CHUNK) -> jax.Array:
    """`attention` for self-attention over one sequence buffer (no cache: query i is slot i),
    with the causal structure exploited: queries go in chunks of `chunk`, and each chunk only
    computes scores against the keys up to its own end. That skips the all-masked upper
    blocks (close to half the score and value FLOPs at long lengths) and keeps the score
    tensors small. `mask` must be causal over slots, as `attention_mask` makes it. Other
    implementations, and lengths not a multiple of `chunk` above it, use `attention` whole.
    """
    t = q.shape[1]
    if impl != "xla" or t <= chunk or t % chunk:
        return attention(q, k, v, mask, impl)
    return _from_head_major(_causal_chunked_attention(*_to_head_major(q, k, v), mask, chunk))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _causal_chunked_attention(qh, kh, vh, mask, chunk):
    return _causal_chunked_fwd(qh, kh, vh, mask, chunk)[0]


def _causal_chunked_fwd(qh, kh, vh, mask, chunk):
    # Residuals: q, k, v and the output once, plus each chunk's log-sum-exp.
    qs = _scaled(qh)
    outs, lses = [], []
    for s in range(0, qh.shape[3], chunk):
        out, lse = _attention_forward(qs[:, :, :, s:s + chunk], kh[:, :, :s + chunk], vh[:, :, :s + chunk],
                                      mask[:, :, s:s + chunk, :s + chunk])
        outs.append(out)
        lses.append(lse)
    out = jnp.concatenate(outs, axis=3)
    return out, (qh, kh, vh, mask, tuple(lses), out)


def _causal_chunked_bwd(chunk, residuals, g):
    qh, kh, vh, mask, lses, out = residuals
    qs = _scaled(qh)
    dqs = []
    dk, dv = jnp.zeros(kh.shape, jnp.float32), jnp.zeros(vh.shape, jnp.float32)
    for i, s in enumerate(range(0, qh.shape[3], chunk)):
        e = s + chunk
        dq_i, dk_i, dv_i = _attention_grads(qs[:, :, :, s:e], kh[:, :, :e], vh[:, :, :e], mask[:, :, s:e, :e],
                                            lses[i], out[:, :, :, s:e], g[:, :, :, s:e])
        dqs.append(dq_i)
        dk = dk.at[:, :, :e].add(dk_i)
        dv = dv.at[:, :, :e].add(dv_i)
    return _scaled(jnp.concatenate(dqs, axis=3)).astype(qh.dtype), dk.astype(kh.dtype), dv.astype(vh.dtype), None


_causal_chunked_attention.defvjp(_causal_chunked_fwd, _causal_chunked_bwd)
