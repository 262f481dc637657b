"""Attention: the mask, the `model.attention` seam, grouped-query softmax attention
(head-major batched matmuls), the causal query-chunked variant for training, and attention
over a head-major KV cache.

`model.attention` picks the kernel (`resolve_impl` turns `auto` into one of the others):

- `xla`: explicit einsums with a float32 softmax; causal self-attention goes in query chunks
  that skip the all-masked blocks, with a hand-written backward pass in the manner of flash
  attention (it keeps the inputs, the output and each query's log-sum-exp, and recomputes
  the probabilities). Runs everywhere; the CPU default.
- `dot_product`: `jax.nn.dot_product_attention` compiled by XLA (the full score matrix,
  JAX's own autodiff).
- `cudnn`: cuDNN flash attention (GPU, bfloat16/float16): causal mask type with packed
  segments as run lengths/offsets (`cudnn.py`), so the masked blocks are skipped.
- `splash`: the Pallas splash-attention kernel (TPU): causal block mask with segment ids
  (`splash.py`).
- `auto`: TPU -> splash; GPU -> cudnn for bfloat16/float16 inputs, else xla; CPU -> xla.

`cudnn` and `splash` are kernels for self-attention without a cache (training, evaluation,
scoring); attention over a KV cache (sampling) runs the xla path for them.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

NEG_INF = -1e30
# Query chunk of `causal_self_attention` (128 measured best for 512 tokens on CPU).
CAUSAL_CHUNK = 128
IMPLS = ("xla", "dot_product", "cudnn", "splash")
# Backends each kernel runs on (None: all).
_BACKENDS = {"cudnn": ("gpu", "cuda"), "splash": ("tpu",)}
_HALF = (jnp.bfloat16, jnp.float16)


def resolve_impl(impl: str, backend: str, dtype) -> str:
    """The attention implementation `model.attention = impl` runs on `backend` ('cpu', 'gpu'/
    'cuda', 'tpu') for inputs of `dtype`: `auto` -> `splash` on TPU, `cudnn` on GPU for
    bfloat16/float16 (cuDNN's flash kernel takes no float32), `xla` otherwise; any other
    setting is returned as is after checking it can run there (ValueError naming
    `model.attention` and the backend if not)."""
    if impl == "auto":
        if backend == "tpu":
            return "splash"
        if backend in _BACKENDS["cudnn"] and jnp.dtype(dtype) in map(jnp.dtype, _HALF):
            return "cudnn"
        return "xla"
    if impl not in IMPLS:
        raise ValueError(f"model.attention: unknown implementation {impl!r} (expected one of {IMPLS + ('auto',)})")
    allowed = _BACKENDS.get(impl)
    if allowed is not None and backend not in allowed:
        raise ValueError(f"model.attention={impl!r} needs a {allowed[0].upper()} backend, but this program runs on "
                         f"{backend!r}; use 'auto' (or 'xla') here")
    if impl == "cudnn" and jnp.dtype(dtype) not in map(jnp.dtype, _HALF):
        raise ValueError(f"model.attention='cudnn' needs bfloat16/float16 inputs, got {jnp.dtype(dtype).name}; "
                         "set model.dtype=bfloat16 or use 'auto'")
    return impl


def current_backend() -> str:
    """The platform being compiled for: the active mesh's devices (a TPU topology under
    `--compile_only --compile_topology`, on any host), else JAX's default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else getattr(mesh, "abstract_device", None)
    return device.platform if device is not None else jax.default_backend()


@flax.struct.dataclass
class AttentionMask:
    """Which keys each query may read: causal over slots (positions in the possibly cached
    sequence buffer) and same segment only (segment 0 marks padding, which real tokens never
    attend to). Kernels read the slots/segments; `dense()` builds the boolean matrix."""

    q_slots: jax.Array  # [B, Tq]
    kv_slots: jax.Array  # [B, Tk]
    q_segments: jax.Array  # [B, Tq]
    kv_segments: jax.Array  # [B, Tk]

    def dense(self) -> jax.Array:
        """Boolean mask [B, 1, Tq, Tk]."""
        causal = self.q_slots[:, :, None] >= self.kv_slots[:, None, :]
        same = self.q_segments[:, :, None] == self.kv_segments[:, None, :]
        return (causal & same)[:, None, :, :]

    def block(self, q_stop: int, q_start: int = 0, kv_stop: int | None = None) -> "AttentionMask":
        """The mask of queries [q_start, q_stop) against keys [0, kv_stop)."""
        return AttentionMask(self.q_slots[:, q_start:q_stop], self.kv_slots[:, :kv_stop],
                             self.q_segments[:, q_start:q_stop], self.kv_segments[:, :kv_stop])


def attention_mask(q_slots: jax.Array, kv_slots: jax.Array, q_segments: jax.Array,
                   kv_segments: jax.Array) -> AttentionMask:
    """The mask for queries at `q_slots` [B,Tq] reading keys at `kv_slots` [B,Tk] (slots are
    positions in the possibly cached sequence buffer), with their segment ids (0 = padding):
    causal over slots, same segment only. A pytree (no [B,1,Tq,Tk] array is built here)."""
    return AttentionMask(q_slots, kv_slots, q_segments, kv_segments)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, impl: str) -> jax.Array:
    """Grouped-query attention under any mask. q [B,Tq,H,D], k/v [B,Tk,Hkv,D] -> [B,Tq,H,D].

    `impl` 'xla' (explicit einsums, float32 softmax), 'dot_product' or 'cudnn'
    (`jax.nn.dot_product_attention` asked for that implementation by name, with the dense
    mask: JAX's default is XLA, it never picks cuDNN by itself). Causal self-attention
    wants `causal_self_attention`, which can skip masked blocks.
    """
    if impl in ("dot_product", "cudnn"):
        return jax.nn.dot_product_attention(q, k, v, mask=mask.dense(), scale=q.shape[-1] ** -0.5,
                                            implementation="cudnn" if impl == "cudnn" else "xla")
    qh, kh, vh = _to_head_major(q, k, v)
    return _from_head_major(_head_major_attention(qh, kh, vh, mask.dense()))


def cached_kv_attention(q: jax.Array, kh: jax.Array, vh: jax.Array, mask: AttentionMask, impl: str) -> jax.Array:
    """`attention` with keys/values already head-major, as a KV cache stores them:
    q [B,Tq,H,D], kh/vh [B,Hkv,Tk,D] -> [B,Tq,H,D]. `dot_product` runs as named; `cudnn`,
    `splash` (and `auto`) run the xla path: their kernels here take self-attention over one
    buffer (query i at slot i), and decoding reads a few queries against the whole cache."""
    if resolve_impl(impl, current_backend(), q.dtype) == "dot_product":
        return attention(q, kh.transpose(0, 2, 1, 3), vh.transpose(0, 2, 1, 3), mask, impl)
    return _from_head_major(_head_major_attention(_queries_head_major(q, kh.shape[1]), kh, vh, mask.dense()))


def causal_self_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, impl: str,
                          chunk: int = CAUSAL_CHUNK) -> jax.Array:
    """Self-attention over one sequence buffer (no cache: query i is slot i), q [B,T,H,D],
    k/v [B,T,Hkv,D] -> [B,T,H,D], with `impl` resolved for the backend being compiled for.

    `xla` exploits the causal structure: queries go in chunks of `chunk`, and each chunk only
    computes scores against the keys up to its own end. That skips the all-masked upper
    blocks (close to half the score and value FLOPs at long lengths) and keeps the score
    tensors small. Lengths not a multiple of `chunk` above it use `attention` whole, as do
    `splash` lengths the kernel does not tile (not a multiple of 128).
    """
    impl = resolve_impl(impl, current_backend(), q.dtype)
    t = q.shape[1]
    if impl == "splash":
        from easylm_imitate.models import splash

        if splash.supports_length(t):
            return splash.causal_attention(q, k, v, mask.q_segments)
        impl = "xla"
    if impl == "cudnn":
        from easylm_imitate.models import cudnn

        return cudnn.causal_attention(q, k, v, mask.q_segments, mask.dense)
    if impl != "xla" or t <= chunk or t % chunk:
        return attention(q, k, v, mask, impl)
    return _from_head_major(_causal_chunked_attention(*_to_head_major(q, k, v), mask, chunk))


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _causal_chunked_attention(qh, kh, vh, mask, chunk):
    return _causal_chunked_fwd(qh, kh, vh, mask, chunk)[0]


def _causal_chunked_fwd(qh, kh, vh, mask, chunk):
    # Residuals: q, k, v and the output once, plus each chunk's log-sum-exp.
    qs = _scaled(qh)
    outs, lses = [], []
    for s in range(0, qh.shape[3], chunk):
        out, lse = _attention_forward(qs[:, :, :, s:s + chunk], kh[:, :, :s + chunk], vh[:, :, :s + chunk],
                                      mask.block(s + chunk, s, s + chunk).dense())
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
        dq_i, dk_i, dv_i = _attention_grads(qs[:, :, :, s:e], kh[:, :, :e], vh[:, :, :e], mask.block(e, s, e).dense(),
                                            lses[i], out[:, :, :, s:e], g[:, :, :, s:e])
        dqs.append(dq_i)
        dk = dk.at[:, :, :e].add(dk_i)
        dv = dv.at[:, :, :e].add(dv_i)
    return _scaled(jnp.concatenate(dqs, axis=3)).astype(qh.dtype), dk.astype(kh.dtype), dv.astype(vh.dtype), None


_causal_chunked_attention.defvjp(_causal_chunked_fwd, _causal_chunked_bwd)
