"""Pure functions behind the model's modules (`modules.py`): projections, norms, SwiGLU, RoPE, remat.

The differentiable pieces have hand-written backward passes that keep only their inputs as
residuals: under the scanned layers every residual is stacked across layers, and what
autodiff would save by default (reshaped copies, intermediate elementwise results) made a
SmolLM2 training step ~15% slower on CPU. Attention lives in `attention.py`."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

# What the blocks tag their intermediate results with (`jax.ad_checkpoint.checkpoint_name`):
# one name per projection, the same for both families (GPT-2's fc/proj are mlp_up/mlp_down),
# and the attention output. The remat policies save by these names, as MaxText's do.
PROJECTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "mlp_gate", "mlp_up", "mlp_down")
ATTENTION_NAME = "attention"


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
    """LayerNorm with bias computed in float32; returns float32. The backward pass keeps only
    `x`, `scale` and `bias` (the normalisation is recomputed), as `rms_norm` does."""
    return _layer_norm(x, scale, bias, eps)


def _layer_norm_stats(x32, eps):
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    return centred, jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x, scale, bias, eps):
    centred, rstd = _layer_norm_stats(x.astype(jnp.float32), eps)
    return centred * rstd * scale.astype(jnp.float32) + bias.astype(jnp.float32)


def _layer_norm_fwd(x, scale, bias, eps):
    return _layer_norm(x, scale, bias, eps), (x, scale, bias)


def _layer_norm_bwd(eps, residuals, g):
    x, scale, bias = residuals
    centred, rstd = _layer_norm_stats(x.astype(jnp.float32), eps)
    normed = centred * rstd
    gs = g * scale.astype(jnp.float32)
    dx = rstd * (gs - jnp.mean(gs, axis=-1, keepdims=True) - normed * jnp.mean(gs * normed, axis=-1, keepdims=True))
    flat = (-1, x.shape[-1])
    dscale = jnp.sum((g * normed).reshape(flat), axis=0)
    dbias = jnp.sum(g.reshape(flat), axis=0)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)

_GELU_C = math.sqrt(2.0 / math.pi)


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """GPT-2's tanh-approximated GELU (`jax.nn.gelu(x, approximate=True)`). The backward pass
    keeps only `x` (autodiff of the expression would save its tanh and powers as well)."""
    return jax.nn.gelu(x, approximate=True)


def _gelu_fwd(x):
    return gelu(x), x


def _gelu_bwd(x, g):
    x32 = x.astype(jnp.float32)
    t = jnp.tanh(_GELU_C * (x32 + 0.044715 * x32 ** 3))
    slope = 0.5 * (1.0 + t) + 0.5 * x32 * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x32 * x32)
    return ((g * slope).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


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


# Remat policy name -> the tagged results a layer keeps for the backward pass (None: no
# remat, everything autodiff saves is kept; ()): keep only the layer's input and recompute).
# The projections' own custom VJPs hide their dots from `jax.checkpoint_policies`' dot-based
# policies, so every policy names what it saves.
REMAT_SAVES = {
    "none": None,
    "full": (),
    "save_dots": PROJECTION_NAMES + (ATTENTION_NAME,),
    "save_dots_no_batch": PROJECTION_NAMES,  # the attention products are the batched dots
    "save_qkv_proj": ("q_proj", "k_proj", "v_proj"),
}


def remat_policy(name: str):
    """The `jax.checkpoint` policy for a named remat setting, or None for no remat."""
    if name not in REMAT_SAVES:
        raise ValueError(f"unknown remat policy {name!r}; choose one of {sorted(REMAT_SAVES)}")
    saves = REMAT_SAVES[name]
    if saves is None:
        return None
    return jax.checkpoint_policies.save_only_these_names(*saves)


def scan_layers(body, carry, stacked, remat: str):
    """Run `body(carry, layer_slice) -> (carry, out)` over the leading axis of `stacked`."""
    if remat != "none":
        body = jax.checkpoint(body, policy=remat_policy(remat), prevent_cse=False)
    return jax.lax.scan(body, carry, stacked)


def compute_dtype(name: str):
    """jnp dtype for a config dtype name."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]
