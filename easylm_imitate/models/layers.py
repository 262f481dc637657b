"""Pure functions shared by the model families: norms, RoPE, masks, attention, remat."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

NEG_INF = -1e30
# Query chunk of `causal_self_attention` (128 measured best for 512 tokens on CPU).
CAUSAL_CHUNK = 128


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """RMSNorm computed in float32; returns float32."""
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)
    return x * scale.astype(jnp.float32)


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
    """
    lead, k_shape = x.shape[:x.ndim - in_dims], w.shape[:in_dims]
    if tuple(x.shape[x.ndim - in_dims:]) != tuple(k_shape):
        raise ValueError(f"dense: input {x.shape} does not end in the weight's input dims {k_shape}")
    k = math.prod(k_shape)
    out = jnp.dot(x.reshape(-1, k), w.reshape(k, -1), preferred_element_type=preferred_element_type)
    return out.reshape(*lead, *w.shape[in_dims:])


def rope_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [batch, seq, head_dim] for the rotate-half RoPE of HF LLaMA."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate x [B, T, H, D] by position (dimension j pairs with j + D/2), in float32."""
    dtype = x.dtype
    x = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    out = x * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(dtype)


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


def _head_major_attention(qh, kh, vh, mask):
    """Softmax attention on head-major inputs; mask [B,1,Tq,Tk]; float32 scores."""
    scale = qh.shape[-1] ** -0.5
    logits = jnp.einsum("bgrqd,bgkd->bgrqk", qh, kh, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(mask[:, :, None], logits, NEG_INF)
    weights = jax.nn.softmax(logits, axis=-1).astype(vh.dtype)
    return jnp.einsum("bgrqk,bgkd->bgrqd", weights, vh)


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
    qh, kh, vh = _to_head_major(q, k, v)
    outs = [_head_major_attention(qh[:, :, :, s:s + chunk], kh[:, :, :s + chunk], vh[:, :, :s + chunk],
                                  mask[:, :, s:s + chunk, :s + chunk])
            for s in range(0, t, chunk)]
    return _from_head_major(jnp.concatenate(outs, axis=3))


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
