"""The decoder-only skeleton both model families share: masks, KV cache, scanned blocks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from easylm_imitate import parallel
from easylm_imitate.lora import quant
from easylm_imitate.models import attention, layers, modules
from easylm_imitate.models.config import ModelConfig

INIT_STD = 0.02
ACTIVATION_AXES = ("batch", None, None)  # logical axes of the residual stream [B, T, D]
KV_AXES = ("batch", "kv_heads", None, "head_dim")  # one layer's KV cache buffer [B, Hkv, slots, D]
def new_param(rngs: nnx.Rngs, shape: tuple[int, ...], axes: tuple[str | None, ...],
              init: str = "normal") -> nnx.Param:
    """A float32 parameter with logical axis names (`logical_axes` metadata) for sharding."""
    if len(shape) != len(axes):
        raise ValueError(f"shape {shape} and logical axes {axes} differ in rank")
    if init == "normal":
        value = INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)
    elif init == "ones":
        value = jnp.ones(shape, jnp.float32)
    elif init == "zeros":
        value = jnp.zeros(shape, jnp.float32)
    else:
        raise ValueError(f"unknown init {init!r}")
    return nnx.Param(value, logical_axes=axes)


@flax.struct.dataclass
class KVCache:
    """Key/value buffers for decoding.

    k, v: [layers, batch, kv_heads, slots, head_dim] (stacked, for the scanned layers) or a
    tuple of one [batch, kv_heads, slots, head_dim] buffer per layer (for `layer_params`);
    head-major, so attention reads them without a transpose;
    segments: [batch, slots] (0 = empty or padding); index: the next slot to write (shared by
    the batch; prompts are left-padded).
    """

    k: jax.Array
    v: jax.Array
    segments: jax.Array
    index: jax.Array

    @classmethod
    def create(cls, cfg: ModelConfig, batch: int, slots: int, dtype=None, per_layer: bool = False) -> "KVCache":
        """An empty cache for `batch` rows of `slots` tokens (one buffer per layer if
        `per_layer`, else stacked)."""
        dtype = dtype or layers.compute_dtype(cfg.dtype)
        shape = (batch, cfg.kv_heads, slots, cfg.dim_per_head)
        if per_layer:
            k = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
            v = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
        else:
            k = v = jnp.zeros((cfg.num_layers, *shape), dtype)
        return cls(k=k, v=v, segments=jnp.zeros((batch, slots), jnp.int32), index=jnp.zeros((), jnp.int32))

    @property
    def per_layer(self) -> bool:
        """Whether k/v hold one buffer per layer (else one stacked buffer)."""
        return isinstance(self.k, tuple)


def cached_attention(cfg: ModelConfig, q, k, v, mask, layer_cache, index):
    """Attention of new q/k/v [B,T,H(kv),D].

    `layer_cache` is None (no cache) or `(k_buf, v_buf, layer)`: either the whole stacked
    cache and this layer's index, or (layer None) this layer's own buffers. Only the new
    tokens are written, in place, at slot `index` (of stack entry `layer`); the layer's
    keys/values are then read for attention. Returns the output and the updated
    `(k_buf, v_buf)`.
    """
    if layer_cache is None:
        out = attention.causal_self_attention(q, k, v, mask, cfg.attention)
        return checkpoint_name(out, layers.ATTENTION_NAME), None
    k_buf, v_buf, layer = layer_cache
    k_new = k.transpose(0, 2, 1, 3).astype(k_buf.dtype)  # [B, Hkv, T, D]
    v_new = v.transpose(0, 2, 1, 3).astype(v_buf.dtype)
    if layer is None:
        k_buf = jax.lax.dynamic_update_slice(k_buf, k_new, (0, 0, index, 0))
        v_buf = jax.lax.dynamic_update_slice(v_buf, v_new, (0, 0, index, 0))
        k_all, v_all = k_buf, v_buf
    else:
        k_buf = jax.lax.dynamic_update_slice(k_buf, k_new[None], (layer, 0, 0, index, 0))
        v_buf = jax.lax.dynamic_update_slice(v_buf, v_new[None], (layer, 0, 0, index, 0))
        k_all = jax.lax.dynamic_index_in_dim(k_buf, layer, 0, keepdims=False)
        v_all = jax.lax.dynamic_index_in_dim(v_buf, layer, 0, keepdims=False)
    out = attention.cached_kv_attention(q, k_all.astype(q.dtype), v_all.astype(q.dtype), mask, cfg.attention)
    return out, (k_buf, v_buf)


class Blocks(nnx.Module):
    """A stack of transformer blocks whose parameters carry a leading `layers` axis (stored
    flat under their own names, e.g. `wq`; the forward pass builds each layer's module tree
    over its slice, see `models.modules`)."""

    def stacked(self, dtype, replaced: Mapping | None = None) -> dict:
        """All block parameters as a dict of arrays cast to the compute dtype; entries of
        `replaced` (e.g. a QLoRA run's quantised projections) are taken as they are instead."""
        replaced = replaced or {}
        return {name: replaced[name] if name in replaced else var[...].astype(dtype)
                for name, var in vars(self).items() if isinstance(var, nnx.Param)}

    def layer_axes(self) -> dict[str, tuple]:
        """Logical axes of one layer's slice of each stacked parameter."""
        return {name: tuple(var.logical_axes[1:]) for name, var in vars(self).items()
                if isinstance(var, nnx.Param)}


def _one_layer(value):
    """A stacked entry's slice as the scan hands it over: arrays are sliced already; a
    quantised array (a pytree) has its codes and scales sliced and its layout fixed here."""
    return value.unstacked() if quant.is_quantized(value) else value


class DecoderLM(nnx.Module):
    """Shared forward pass. Families implement embed, block_context, layer and head.

    `sharding_rules` (a `parallel.ShardingRules`, set by `parallel.shard_model`,
    `parallel.create_sharded_model`, `easylm_imitate.load(mesh=...)` and the train state's
    layout; None on one device) is part of the model's static graph: with it every block pins
    its weight slices and activations to their sharding, whoever runs the model.
    """

    cfg: ModelConfig
    blocks: Blocks
    sharding_rules: "parallel.ShardingRules | None"

    def embed(self, tokens: jax.Array, positions: jax.Array, dtype) -> jax.Array:
        """Token (and position) embeddings [B, T, D] in the compute dtype."""
        raise NotImplementedError

    def block_context(self, positions: jax.Array):
        """Per-call values every block needs (e.g. RoPE tables)."""
        return None

    def layer_module(self, index: int) -> nnx.Module:
        """Layer `index`'s block module (a tree of NNX modules: norms, attention, MLP and their
        `Linear` projections) over that layer's slice of the stacked parameters, as the forward
        pass builds it; for inspecting one layer or running it alone."""
        dtype = layers.compute_dtype(self.cfg.dtype)
        p = {name: var[...][index].astype(dtype) for name, var in vars(self.blocks).items() if isinstance(var, nnx.Param)}
        return self.layer(modules.LayerFactory(p, self.blocks.layer_axes(), self.sharding_rules))

    def layer(self, make: modules.LayerFactory) -> nnx.Module:
        """One layer's block module, built by `make` over that layer's parameter slice; called
        as `block(x, context, mask, layer_cache, index) -> (x, updated layer cache or None)`."""
        raise NotImplementedError

    def head(self, x: jax.Array, dtype) -> jax.Array:
        """Final norm and vocabulary projection; float32 logits [B, T, V]."""
        raise NotImplementedError

    def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
                 segment_ids: jax.Array | None = None, cache: KVCache | None = None,
                 layer_params: Sequence[dict] | None = None, blocks: Mapping | None = None,
                 adapters: modules.Adapters | None = None):
        """Logits [B, T, V] (float32) for token ids [B, T].

        `segment_ids` (0 = padding) keep packed examples from attending to each other;
        `positions` restart at 0 in each segment. With `cache`, the tokens are written at
        `cache.index` and `(logits, new_cache)` is returned.

        `layer_params` (one dict of arrays per layer, in place of the stacked block
        parameters) runs the layers as an unrolled loop over separate buffers, with a
        per-layer cache. Decoding on CPU wants this: a scan slices (copies) every layer's
        weights out of the stack at each step.

        `blocks` replaces some stacked block parameters by name (a QLoRA run's quantised
        projections, dequantised one layer at a time); `adapters` adds LoRA adapters to the
        projections they name.
        """
        cfg = self.cfg
        dtype = layers.compute_dtype(cfg.dtype)
        b, t = tokens.shape
        index = cache.index if cache is not None else jnp.zeros((), jnp.int32)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32) + index, (b, t))
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32)
        q_slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32) + index, (b, t))
        if cache is None:
            kv_segments, kv_slots = segment_ids, q_slots
        else:
            cache = self.constrain_cache(cache)
            kv_segments = jax.lax.dynamic_update_slice(cache.segments, segment_ids.astype(jnp.int32), (0, index))
            kv_slots = jnp.broadcast_to(jnp.arange(cache.segments.shape[1], dtype=jnp.int32), kv_segments.shape)
        mask = attention.attention_mask(q_slots, kv_slots, segment_ids, kv_segments)
        x = self.embed(tokens, positions, dtype)
        context = self.block_context(positions)
        axes = self.blocks.layer_axes()
        rules = self.sharding_rules
        if (blocks or adapters) and (layer_params is not None or cache is not None):
            raise ValueError("blocks/adapters replace the stacked parameters of a scanned forward pass "
                             "(training and scoring), not a cached or unrolled one")

        def block(p, x, layer_cache, layer_adapters=None):
            p = {name: _one_layer(value) for name, value in p.items()}
            module = self.layer(modules.LayerFactory(p, axes, rules, layer_adapters))
            # The residual stream is pinned at every layer: without it XLA may all-reduce
            # full-batch activations (each module pins its own weights).
            return module(parallel.constrain(x, ACTIVATION_AXES, rules), context, mask, layer_cache, index)

        if layer_params is not None:
            x, k_stack, v_stack = self._unrolled(block, x, layer_params, cache, dtype)
        elif cache is None:
            params = self.blocks.stacked(dtype, blocks)
            layer_ids = jnp.arange(cfg.num_layers, dtype=jnp.int32)
            stacked_adapters = None if adapters is None else adapters.stacked

            def body(x, xs):
                p, layer, ad = xs
                layer_adapters = None if adapters is None else adapters.replace(stacked=ad).for_layer(layer)
                return block(p, x, None, layer_adapters)[0], None

            x, _ = layers.scan_layers(body, x, (params, layer_ids, stacked_adapters), cfg.remat)
        else:
            if cache.per_layer:
                raise ValueError("a per-layer KV cache needs layer_params")
            params = self.blocks.stacked(dtype)
            # The stacked cache rides in the carry so each step updates it in place.
            def body(carry, xs):
                x, k_stack, v_stack = carry
                p, layer = xs
                x, (k_stack, v_stack) = block(p, x, (k_stack, v_stack, layer))
                return (x, k_stack, v_stack), None

            layer_ids = jnp.arange(cfg.num_layers, dtype=jnp.int32)
            (x, k_stack, v_stack), _ = layers.scan_layers(body, (x, cache.k, cache.v), (params, layer_ids), cfg.remat)
        logits = self.head(x, dtype)
        if cache is None:
            return logits
        return logits, self.constrain_cache(KVCache(k=k_stack, v=v_stack, segments=kv_segments, index=index + t))

    def constrain_cache(self, cache: KVCache) -> KVCache:
        """`cache` with its buffers pinned to their sharding under the model's rules (batch over
        the data axes, key/value heads over tensor parallelism), as the activations are."""
        rules = self.sharding_rules
        if rules is None:
            return cache
        if cache.per_layer:
            k = tuple(rules.constrain(buf, KV_AXES) for buf in cache.k)
            v = tuple(rules.constrain(buf, KV_AXES) for buf in cache.v)
        else:
            k, v = rules.constrain(cache.k, ("layers", *KV_AXES)), rules.constrain(cache.v, ("layers", *KV_AXES))
        return cache.replace(k=k, v=v, segments=rules.constrain(cache.segments, ("batch", None)))

    def _unrolled(self, block, x, layer_params, cache, dtype):
        """Run the blocks as a Python loop over per-layer parameters (and cache buffers)."""
        if len(layer_params) != self.cfg.num_layers:
            raise ValueError(f"layer_params has {len(layer_params)} layers, the model {self.cfg.num_layers}")
        if cache is not None and not cache.per_layer:
            raise ValueError("layer_params needs a per-layer KV cache (KVCache.create(per_layer=True))")
        k_bufs, v_bufs = [], []
        for i, p in enumerate(layer_params):
            p = {name: value.astype(dtype) for name, value in p.items()}
            layer_cache = None if cache is None else (cache.k[i], cache.v[i], None)
            x, new_cache = block(p, x, layer_cache)
            if new_cache is not None:
                k_bufs.append(new_cache[0])
                v_bufs.append(new_cache[1])
        return x, tuple(k_bufs), tuple(v_bufs)
