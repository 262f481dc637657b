"""Pure functions shared by the model families: norms, RoPE, masks, attention, remat."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

NEG_INF = -1e30
# Query chunk of `causal_self_attention` (128 measured best for 512 tokens on CPU).
CAUSAL_CHUNK = 128


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """RMSNorm computed in float32; returns float32. The backward pass keeps only `x` and
    `scale` (the normalisation is recomputed), so a scanned stack saves one array per norm."""
    return _rms_norm(x, scale, eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rms_norm(x, scale, eps):
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps) * scale.astype(jnp.float32)


def _rms_norm_fwd(x, scale, eps):
    return _rms_norm(x, scale, eps), (x, scale)


def _rms_norm_bwd(eps, residuals, g):
    x, scale = residuals
    x32, s32 = x.astype(jnp.float32), scale.astype(jnp.float32)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    normed = x32 * rstd
    gs = g * s32
    dx = rstd * (gs - normed * jnp.mean(gs * normed, axis=-1, keepdims=True))
    dscale = jnp.sum((g * normed).reshape(-1, x.shape[-1]), axis=0)
    return dx.astype(x.dtype), dscale.astype(scale.dtype)


_rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


@jax.custom_vjp
def swiglu(gate: jax.Array, up: jax.Array) -> jax.Array:
    """silu(gate) * up, the LLaMA MLP's gating. The backward pass keeps only `gate` and `up`
    (autodiff of the plain expression would save three more arrays of the MLP's width)."""
    return jax.nn.silu(gate) * up


def _swiglu_fwd(gate, up):
    return swiglu(gate, up), (gate, up)


def _swiglu_bwd(residuals, g):
    gate, up = residuals
    sig = jax.nn.sigmoid(gate)
    silu = gate * sig
    dgate = g * up * (sig * (1 + gate * (1 - sig)))
    return dgate.astype(gate.dtype), (g * silu).astype(up.dtype)


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """LayerNorm with bias computed in float32; returns float32."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale.astype(jnp.float32) + bias.astype(jnp.float32)


def dense(x: jax.Array, w: jax.Array, in_dims: int = 1, preferred_element_type=None) -> jax.Array:
    """x [..., *w.shape[:in_dims]] @ w -> [..., *w.shape[in_dims:]], as one 2-D matmul.

    The leading (batch, sequence) dimensions are flattened into one token axis first: with
    two contracting dimensions in the weight gradient, XLA:CPU transposes the activation
    gradients into a copy before the matmul (measured: ~10% of a SmolLM2 training step).
    The backward pass keeps only `x` and `w` themselves (see `_dense_bwd`).
    """
    k_shape = w.shape[:in_dims]
    if tuple(x.shape[x.ndim - in_dims:]) != tuple(k_shape):
        raise ValueError(f"dense: input {x.shape} does not end in the weight's input dims {k_shape}")
    return _dense(x, w, in_dims, preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dense(x, w, in_dims, preferred_element_type):
    x2, w2 = _as_matrices(x, w, in_dims)
    out = jnp.dot(x2, w2, preferred_element_type=preferred_element_type)
    return out.reshape(*x.shape[:x.ndim - in_dims], *w.shape[in_dims:])


def _as_matrices(x, w, in_dims):
    """x as [tokens, K] and w as [K, N]."""
    k = math.prod(w.shape[:in_dims])
    return x.reshape(-1, k), w.reshape(k, -1)


def _dense_fwd(x, w, in_dims, preferred_element_type):
    # Residuals are the caller's own arrays, not their 2-D reshapes: under `lax.scan` every
    # distinct residual is stacked across layers, and autodiff's default would save one
    # reshaped copy of the input per projection and one of every weight (a copy of the
    # whole model per step).
    return _dense(x, w, in_dims, preferred_element_type), (x, w)


def _dense_bwd(in_dims, preferred_element_type, residuals, g):
    x, w = residuals
    x2, w2 = _as_matrices(x, w, in_dims)
    g2 = g.reshape(x2.shape[0], w2.shape[1])
    dx = jnp.dot(g2, w2.T).astype(x.dtype).reshape(x.shape)
    dw = jnp.dot(x2.T, g2).astype(w.dtype).reshape(w.shape)
    return dx, dw


_dense.defvjp(_dense_fwd, _dense_bwd)


def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [batch, seq, head_dim] for the rotate-half RoPE of HF LLaMA."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


@jax.custom_vjp
def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate x [B, T, H, D] by position (dimension j pairs with j + D/2), in float32.
    The backward pass (the inverse rotation) keeps only the tables, which every layer shares."""
    return _rotate(x, cos, sin)


def _rotate(x, cos, sin):
    dtype = x.dtype
    x = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    out = x * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(dtype)


def _rope_fwd(x, cos, sin):
    return _rotate(x, cos, sin), (cos, sin)


def _rope_bwd(residuals, g):
    cos, sin = residuals
    return _rotate(g, cos, -sin), None, None  # the transpose of a rotation is the opposite one


apply_rope.defvjp(_rope_fwd, _rope_bwd)


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

    `impl` is 'xla' (explicit einsums with a float32 softmax) or 'dot_product' / 'cudnn'
    (`jax.nn.dot_product_attention`, which picks cuDNN flash attention on GPU).
    """
    if impl in ("dot_product", "cudnn"):
        implementation = "cudnn" if impl == "cudnn" else None
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=q.shape[-1] ** -0.5,
                                            implementation=implementation)
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

    The backward pass keeps the inputs and the softmax probabilities only (autodiff of the
    plain expression saves the masked scores, their exponentials and more besides)."""
    return _attention_forward(qh, kh, vh, mask)[0]


def _attention_forward(qh, kh, vh, mask):
    scale = qh.shape[-1] ** -0.5
    logits = jnp.einsum("bgrqd,bgkd->bgrqk", qh, kh, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(mask[:, :, None], logits, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bgrqk,bgkd->bgrqd", probs.astype(vh.dtype), vh), probs


def _attention_fwd(qh, kh, vh, mask):
    out, probs = _attention_forward(qh, kh, vh, mask)
    return out, (qh, kh, vh, probs)


def _attention_bwd(residuals, g):
    return (*_attention_grads(*residuals, g), None)


def _attention_grads(qh, kh, vh, probs, g):
    """Gradients of `_attention_forward`'s output for q, k, v, given its probabilities.

    No mask is needed: masked scores have probability exactly 0 (exp of -1e30), and no row
    is fully masked (every query attends to its own slot)."""
    scale = qh.shape[-1] ** -0.5
    dv = jnp.einsum("bgrqk,bgrqd->bgkd", probs.astype(vh.dtype), g)
    dp = jnp.einsum("bgrqd,bgkd->bgrqk", g, vh, preferred_element_type=jnp.float32)
    ds = probs * (dp - jnp.sum(dp * probs, axis=-1, keepdims=True)) * scale
    dq = jnp.einsum("bgrqk,bgkd->bgrqd", ds.astype(kh.dtype), kh)
    dk = jnp.einsum("bgrqk,bgrqd->bgkd", ds.astype(qh.dtype), qh)
    return dq.astype(qh.dtype), dk.astype(kh.dtype), dv.astype(vh.dtype)


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
    # Residuals: q, k, v once, plus each chunk's probabilities.
    outs, probs = [], []
    for s in range(0, qh.shape[3], chunk):
        out, p = _attention_forward(qh[:, :, :, s:s + chunk], kh[:, :, :s + chunk], vh[:, :, :s + chunk],
                                    mask[:, :, s:s + chunk, :s + chunk])
        outs.append(out)
        probs.append(p)
    return jnp.concatenate(outs, axis=3), (qh, kh, vh, tuple(probs))


def _causal_chunked_bwd(chunk, residuals, g):
    qh, kh, vh, probs = residuals
    dqs, dk, dv = [], jnp.zeros_like(kh), jnp.zeros_like(vh)
    for i, s in enumerate(range(0, qh.shape[3], chunk)):
        e = s + chunk
        dq_i, dk_i, dv_i = _attention_grads(qh[:, :, :, s:e], kh[:, :, :e], vh[:, :, :e], probs[i], g[:, :, :, s:e])
        dqs.append(dq_i)
        dk = dk.at[:, :, :e].add(dk_i)
        dv = dv.at[:, :, :e].add(dv_i)
    return jnp.concatenate(dqs, axis=3), dk, dv, None


_causal_chunked_attention.defvjp(_causal_chunked_fwd, _causal_chunked_bwd)


def remat_policy(name: str):
    """The `jax.checkpoint` policy for a named remat setting, or None for no remat."""
    policies = {
        "none": None,
        "full": jax.checkpoint_policies.nothing_saveable,
        "save_dots": jax.checkpoint_policies.checkpoint_dots,
        "save_dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }
    if name not in policies:
        raise ValueError(f"unknown remat policy {name!r}; choose one of {sorted(policies)}")
    return policies[name]


def scan_layers(body, carry, stacked, remat: str):
    """Run `body(carry, layer_slice) -> (carry, out)` over the leading axis of `stacked`."""
    if remat != "none":
        body = jax.checkpoint(body, policy=remat_policy(remat), prevent_cse=False)
    return jax.lax.scan(body, carry, stacked)


def compute_dtype(name: str):
    """jnp dtype for a config dtype name."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]
