"""The layers a decoder block is made of, as Flax NNX modules: projections, norms, LoRA adapters.

Each module owns its parameters (`nnx.Param` with logical axis names) and pins them, and what
it computes, to their sharding under the model's `parallel.ShardingRules`, so whoever runs
the model (train or eval step, sampler, scorer, `load(mesh=...)`) partitions it the same way.

The layers of a model are stacked: `Blocks` stores each parameter once for all layers (the
`[layers, ...]` arrays checkpoints have always held, e.g. `blocks/wq`). The scanned forward
pass takes one layer's slice of that stack and builds the family's block module over it
(`DecoderLM.layer`), which is what `nnx.scan` does with a stacked module's state; the
stored layout stays as it was, so old checkpoints, the converters and the exports read it
unchanged. The arithmetic sits in `layers.py` (its custom backward passes behind these
modules), attention in `attention.py`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from easylm_imitate import parallel
from easylm_imitate.lora import quant
from easylm_imitate.models import layers


class LoraAdapter(nnx.Module):
    """`scale * dropout(x) @ A @ B` added to a projection's output (peft's unmerged LoRA).

    `lora_a` [in..., rank], `lora_b` [rank, out...]; dropout (rate `dropout`, training only)
    falls on the adapter's input, as peft's `lora_dropout` does."""

    def __init__(self, lora_a: jax.Array, lora_b: jax.Array, scale: float, dropout: float = 0.0,
                 key: jax.Array | None = None):
        self.lora_a = nnx.Param(lora_a)
        self.lora_b = nnx.Param(lora_b)
        self.scale = scale
        self.dropout = nnx.Dropout(dropout, rngs=None if key is None else nnx.Rngs(dropout=key),
                                   deterministic=key is None or dropout == 0.0)

    def __call__(self, x: jax.Array) -> jax.Array:
        """The adapter's contribution for input `x` [..., in...]."""
        a, b = self.lora_a[...].astype(x.dtype), self.lora_b[...].astype(x.dtype)
        h = layers.dense(self.dropout(x), a, in_dims=a.ndim - 1)
        return layers.dense(h, b) * jnp.asarray(self.scale, x.dtype)


class Linear(nnx.Module):
    """A projection `x @ kernel (+ bias)` over the kernel's first `in_dims` axes, its output
    tagged `name` (one of `layers.PROJECTION_NAMES`) for the remat policies; with an
    `adapter`, plus its LoRA term. The kernel may be quantised (QLoRA); it is then
    dequantised here, for this layer only."""

    def __init__(self, kernel, axes: tuple, name: str, *, in_dims: int = 1, bias: jax.Array | None = None,
                 bias_axes: tuple | None = None, rules: parallel.ShardingRules | None = None,
                 adapter: LoraAdapter | None = None):
        self.kernel = nnx.Param(kernel, logical_axes=tuple(axes))
        self.bias = None if bias is None else nnx.Param(bias, logical_axes=tuple(bias_axes))
        self.name, self.in_dims, self.rules, self.adapter = name, in_dims, rules, adapter

    def __call__(self, x: jax.Array) -> jax.Array:
        """[..., in...] -> [..., out...] in `x`'s dtype."""
        w = self.kernel.get_value()
        w = w.dequantize(x.dtype) if quant.is_quantized(w) else w.astype(x.dtype)
        w = parallel.constrain(w, self.kernel.logical_axes, self.rules)
        out = layers.dense(x, w, self.in_dims)
        if self.adapter is not None:
            out = out + self.adapter(x)
        if self.bias is not None:
            out = out + parallel.constrain(self.bias[...], self.bias.logical_axes, self.rules)
        return checkpoint_name(out, self.name)


class RMSNorm(nnx.Module):
    """RMSNorm with a learned scale; float32 out (callers cast to the compute dtype)."""

    def __init__(self, scale: jax.Array, eps: float, rules: parallel.ShardingRules | None = None):
        self.scale = nnx.Param(scale, logical_axes=("norm",))
        self.eps, self.rules = eps, rules

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalised `x`, float32."""
        return layers.rms_norm(x, parallel.constrain(self.scale[...], ("norm",), self.rules), self.eps)


class LayerNorm(nnx.Module):
    """LayerNorm with learned scale and bias; float32 out."""

    def __init__(self, scale: jax.Array, bias: jax.Array, eps: float, rules: parallel.ShardingRules | None = None):
        self.scale = nnx.Param(scale, logical_axes=("norm",))
        self.bias = nnx.Param(bias, logical_axes=("norm",))
        self.eps, self.rules = eps, rules

    def __call__(self, x: jax.Array) -> jax.Array:
        """Normalised `x`, float32."""
        scale = parallel.constrain(self.scale[...], ("norm",), self.rules)
        bias = parallel.constrain(self.bias[...], ("norm",), self.rules)
        return layers.layer_norm(x, scale, bias, self.eps)


class DecoderBlock(nnx.Module):
    """A pre-norm transformer block: `x + attn(attn_norm(x))`, then `x + mlp(mlp_norm(x))`
    (both families; the norms, attention and MLP are the family's)."""

    def __init__(self, attn_norm: nnx.Module, attn: nnx.Module, mlp_norm: nnx.Module, mlp: nnx.Module):
        self.attn_norm, self.attn, self.mlp_norm, self.mlp = attn_norm, attn, mlp_norm, mlp

    def __call__(self, x, context, mask, layer_cache, index):
        """The block's output and the updated layer cache (or None)."""
        attn, new_cache = self.attn(self.attn_norm(x).astype(x.dtype), context, mask, layer_cache, index)
        x = x + attn
        return x + self.mlp(self.mlp_norm(x).astype(x.dtype)), new_cache


@flax.struct.dataclass
class Adapters:
    """LoRA adapters for a forward pass: `stacked` maps a block parameter's name (e.g. `wq`)
    to its `{"lora_a", "lora_b"}` arrays with the leading `layers` axis; `key` (None: no
    dropout, as in evaluation) seeds the adapters' input dropout, one mask per layer."""

    stacked: Mapping[str, Mapping[str, jax.Array]]
    key: jax.Array | None
    scale: float = flax.struct.field(pytree_node=False)
    dropout: float = flax.struct.field(pytree_node=False, default=0.0)

    def for_layer(self, layer: jax.Array) -> "LayerAdapters":
        """This layer's adapters (`self` holding the scan's slices), callable with a parameter
        name as `LayerFactory` calls it."""
        return LayerAdapters(self, layer)


@flax.struct.dataclass
class LayerAdapters:
    """One layer's `Adapters`: their arrays as the layer scan sliced them, and the layer's
    index (for its dropout key)."""

    adapters: Adapters
    layer: jax.Array

    def __call__(self, name: str) -> LoraAdapter | None:
        """The adapter of block parameter `name` in this layer, or None if it has none."""
        ad = self.adapters
        if name not in ad.stacked:
            return None
        key = None if ad.key is None else jax.random.fold_in(jax.random.fold_in(ad.key, self.layer), _name_id(name))
        return LoraAdapter(ad.stacked[name]["lora_a"], ad.stacked[name]["lora_b"], ad.scale, ad.dropout, key)


def _name_id(name: str) -> int:
    """A stable small integer per parameter name, to give each projection its own dropout key."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class LayerFactory:
    """Builds one layer's modules from its parameter slice `p` (name -> array or quantised
    array), the per-layer logical `axes` and the model's `rules`; `adapter(name)` gives the
    LoRA adapter of a parameter, if any."""

    def __init__(self, p: Mapping, axes: Mapping[str, tuple], rules, adapter=None):
        self.p, self.axes, self.rules = p, axes, rules
        self.adapter = adapter or (lambda name: None)

    def linear(self, name: str, tag: str, *, bias: str | None = None, in_dims: int = 1) -> Linear:
        """The projection stored as `name` (with bias `bias`), tagged `tag`."""
        return Linear(self.p[name], self.axes[name], tag, in_dims=in_dims,
                      bias=None if bias is None else self.p[bias], bias_axes=None if bias is None else self.axes[bias],
                      rules=self.rules, adapter=self.adapter(name))

    def rms_norm(self, name: str, eps: float) -> RMSNorm:
        """The RMSNorm whose scale is stored as `name`."""
        return RMSNorm(self.p[name], eps, self.rules)

    def layer_norm(self, scale: str, bias: str, eps: float) -> LayerNorm:
        """The LayerNorm stored as `scale` and `bias`."""
        return LayerNorm(self.p[scale], self.p[bias], eps, self.rules)
