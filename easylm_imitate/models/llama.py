"""LLaMA family (LLaMA 1/2/3, SmolLM2): RMSNorm, rotate-half RoPE, GQA, SwiGLU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from easylm_imitate.models import layers
from easylm_imitate.models.base import Blocks, DecoderLM, cached_attention, new_param
from easylm_imitate.models.config import ModelConfig


class LlamaBlocks(Blocks):
    """Stacked LLaMA block parameters."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        n, d, f = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
        h, hkv, hd = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
        self.attn_norm = new_param(rngs, (n, d), ("layers", "norm"), "ones")
        self.wq = new_param(rngs, (n, d, h, hd), ("layers", "embed", "heads", "head_dim"))
        self.wk = new_param(rngs, (n, d, hkv, hd), ("layers", "embed", "kv_heads", "head_dim"))
        self.wv = new_param(rngs, (n, d, hkv, hd), ("layers", "embed", "kv_heads", "head_dim"))
        self.wo = new_param(rngs, (n, h, hd, d), ("layers", "heads", "head_dim", "embed"))
        self.mlp_norm = new_param(rngs, (n, d), ("layers", "norm"), "ones")
        self.w_gate = new_param(rngs, (n, d, f), ("layers", "embed", "mlp"))
        self.w_up = new_param(rngs, (n, d, f), ("layers", "embed", "mlp"))
        self.w_down = new_param(rngs, (n, f, d), ("layers", "mlp", "embed"))


class Llama(DecoderLM):
    """A LLaMA-family causal language model."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.arch != "llama":
            raise ValueError(f"Llama needs arch='llama', got {cfg.arch!r}")
        self.cfg = cfg
        self.sharding_rules = None  # see DecoderLM; set by parallel.attach_rules
        self.embed_tokens = new_param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"))
        self.blocks = LlamaBlocks(cfg, rngs)
        self.final_norm = new_param(rngs, (cfg.hidden_size,), ("norm",), "ones")
        if not cfg.tie_embeddings:
            self.lm_head = new_param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"))

    def embed(self, tokens, positions, dtype):
        """Token embeddings in the compute dtype."""
        return jnp.take(self.embed_tokens[...], tokens, axis=0).astype(dtype)

    def block_context(self, positions):
        """RoPE cos/sin tables for these positions."""
        return layers.rope_tables(positions, self.cfg.dim_per_head, self.cfg.rope_theta)

    def block(self, p, x, context, mask, layer_cache, index):
        """Pre-norm attention then pre-norm SwiGLU, each with a residual."""
        cfg, dtype = self.cfg, x.dtype
        cos, sin = context
        h = layers.rms_norm(x, p["attn_norm"], cfg.norm_eps).astype(dtype)
        q = layers.apply_rope(layers.project(h, p["wq"], "q_proj"), cos, sin)
        k = layers.apply_rope(layers.project(h, p["wk"], "k_proj"), cos, sin)
        v = layers.project(h, p["wv"], "v_proj")
        attn, new_cache = cached_attention(cfg, q, k, v, mask, layer_cache, index)
        x = x + layers.project(attn, p["wo"], "o_proj", in_dims=2)
        h = layers.rms_norm(x, p["mlp_norm"], cfg.norm_eps).astype(dtype)
        gate = layers.project(h, p["w_gate"], "mlp_gate")
        up = layers.project(h, p["w_up"], "mlp_up")
        x = x + layers.project(layers.swiglu(gate, up), p["w_down"], "mlp_down")
        return x, new_cache

    def head(self, x, dtype):
        """Final RMSNorm and the (possibly tied) output projection, float32 logits."""
        h = layers.rms_norm(x, self.final_norm[...], self.cfg.norm_eps).astype(dtype)
        if self.cfg.tie_embeddings:
            return layers.dense(h, self.embed_tokens[...].astype(dtype).T, preferred_element_type=jnp.float32)
        return layers.dense(h, self.lm_head[...].astype(dtype), preferred_element_type=jnp.float32)
