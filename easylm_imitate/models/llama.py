"""LLaMA family (LLaMA 1/2/3, SmolLM2): RMSNorm, rotate-half RoPE, GQA, SwiGLU."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from easylm_imitate.models import layers
from easylm_imitate.models.base import Blocks, DecoderLM, cached_attention, new_param
from easylm_imitate.models.config import ModelConfig
from easylm_imitate.models.modules import DecoderBlock, Linear


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


class LlamaAttention(nnx.Module):
    """Grouped-query self-attention with rotate-half RoPE on queries and keys."""

    def __init__(self, cfg: ModelConfig, q_proj: Linear, k_proj: Linear, v_proj: Linear, o_proj: Linear):
        self.cfg = cfg
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = q_proj, k_proj, v_proj, o_proj

    def __call__(self, h, rope, mask, layer_cache, index):
        """Attention output [B, T, D] of normed input `h` and the updated layer cache (or None)."""
        cos, sin = rope
        q = layers.apply_rope(self.q_proj(h), cos, sin)
        k = layers.apply_rope(self.k_proj(h), cos, sin)
        attn, new_cache = cached_attention(self.cfg, q, k, self.v_proj(h), mask, layer_cache, index)
        return self.o_proj(attn), new_cache


class SwiGLU(nnx.Module):
    """The LLaMA MLP: down(silu(gate(h)) * up(h))."""

    def __init__(self, gate: Linear, up: Linear, down: Linear):
        self.gate, self.up, self.down = gate, up, down

    def __call__(self, h):
        """MLP output [B, T, D]."""
        return self.down(layers.swiglu(self.gate(h), self.up(h)))


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

    def layer(self, make):
        """A LLaMA block over one layer's parameters."""
        cfg = self.cfg
        attn = LlamaAttention(cfg, make.linear("wq", "q_proj"), make.linear("wk", "k_proj"),
                              make.linear("wv", "v_proj"), make.linear("wo", "o_proj", in_dims=2))
        mlp = SwiGLU(make.linear("w_gate", "mlp_gate"), make.linear("w_up", "mlp_up"), make.linear("w_down", "mlp_down"))
        return DecoderBlock(make.rms_norm("attn_norm", cfg.norm_eps), attn, make.rms_norm("mlp_norm", cfg.norm_eps), mlp)

    def head(self, x, dtype):
        """Final RMSNorm and the (possibly tied) output projection, float32 logits."""
        h = layers.rms_norm(x, self.final_norm[...], self.cfg.norm_eps).astype(dtype)
        if self.cfg.tie_embeddings:
            return layers.dense(h, self.embed_tokens[...].astype(dtype).T, preferred_element_type=jnp.float32)
        return layers.dense(h, self.lm_head[...].astype(dtype), preferred_element_type=jnp.float32)
