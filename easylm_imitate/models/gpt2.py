"""GPT-2 family: learned positions, LayerNorm with bias, GELU MLP, tied head."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from easylm_imitate.models import layers
from easylm_imitate.models.base import Blocks, DecoderLM, cached_attention, new_param
from easylm_imitate.models.config import ModelConfig
from easylm_imitate.models.modules import DecoderBlock, Linear


class GPT2Blocks(Blocks):
    """Stacked GPT-2 block parameters (q, k, v kept apart; HF packs them in c_attn)."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        n, d, f = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
        h, hd = cfg.num_heads, cfg.dim_per_head
        self.ln1_scale = new_param(rngs, (n, d), ("layers", "norm"), "ones")
        self.ln1_bias = new_param(rngs, (n, d), ("layers", "norm"), "zeros")
        for name in ("wq", "wk", "wv"):
            setattr(self, name, new_param(rngs, (n, d, h, hd), ("layers", "embed", "heads", "head_dim")))
        for name in ("bq", "bk", "bv"):
            setattr(self, name, new_param(rngs, (n, h, hd), ("layers", "heads", "head_dim"), "zeros"))
        self.wo = new_param(rngs, (n, h, hd, d), ("layers", "heads", "head_dim", "embed"))
        self.bo = new_param(rngs, (n, d), ("layers", "norm"), "zeros")
        self.ln2_scale = new_param(rngs, (n, d), ("layers", "norm"), "ones")
        self.ln2_bias = new_param(rngs, (n, d), ("layers", "norm"), "zeros")
        self.w_fc = new_param(rngs, (n, d, f), ("layers", "embed", "mlp"))
        self.b_fc = new_param(rngs, (n, f), ("layers", "mlp"), "zeros")
        self.w_proj = new_param(rngs, (n, f, d), ("layers", "mlp", "embed"))
        self.b_proj = new_param(rngs, (n, d), ("layers", "norm"), "zeros")


class GPT2Attention(nnx.Module):
    """Multi-head self-attention with biased projections."""

    def __init__(self, cfg: ModelConfig, q_proj: Linear, k_proj: Linear, v_proj: Linear, o_proj: Linear):
        self.cfg = cfg
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = q_proj, k_proj, v_proj, o_proj

    def __call__(self, h, context, mask, layer_cache, index):
        """Attention output [B, T, D] of normed input `h` and the updated layer cache (or None)."""
        attn, new_cache = cached_attention(self.cfg, self.q_proj(h), self.k_proj(h), self.v_proj(h), mask,
                                           layer_cache, index)
        return self.o_proj(attn), new_cache


class GeluMLP(nnx.Module):
    """The GPT-2 MLP: proj(gelu(fc(h)))."""

    def __init__(self, fc: Linear, proj: Linear):
        self.fc, self.proj = fc, proj

    def __call__(self, h):
        """MLP output [B, T, D]."""
        return self.proj(layers.gelu(self.fc(h)))


class GPT2(DecoderLM):
    """A GPT-2-family causal language model."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.arch != "gpt2":
            raise ValueError(f"GPT2 needs arch='gpt2', got {cfg.arch!r}")
        self.cfg = cfg
        self.sharding_rules = None  # see DecoderLM; set by parallel.attach_rules
        self.wte = new_param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"))
        self.wpe = new_param(rngs, (cfg.max_position_embeddings, cfg.hidden_size), (None, "embed"))
        self.blocks = GPT2Blocks(cfg, rngs)
        self.lnf_scale = new_param(rngs, (cfg.hidden_size,), ("norm",), "ones")
        self.lnf_bias = new_param(rngs, (cfg.hidden_size,), ("norm",), "zeros")

    def embed(self, tokens, positions, dtype):
        """Token plus learned position embeddings in the compute dtype."""
        x = jnp.take(self.wte[...], tokens, axis=0) + jnp.take(self.wpe[...], positions, axis=0)
        return x.astype(dtype)

    def layer(self, make):
        """A GPT-2 block over one layer's parameters."""
        cfg = self.cfg
        attn = GPT2Attention(cfg, make.linear("wq", "q_proj", bias="bq"), make.linear("wk", "k_proj", bias="bk"),
                             make.linear("wv", "v_proj", bias="bv"), make.linear("wo", "o_proj", bias="bo", in_dims=2))
        mlp = GeluMLP(make.linear("w_fc", "mlp_up", bias="b_fc"), make.linear("w_proj", "mlp_down", bias="b_proj"))
        return DecoderBlock(make.layer_norm("ln1_scale", "ln1_bias", cfg.norm_eps), attn,
                            make.layer_norm("ln2_scale", "ln2_bias", cfg.norm_eps), mlp)

    def head(self, x, dtype):
        """Final LayerNorm and the tied output projection, float32 logits."""
        h = layers.layer_norm(x, self.lnf_scale[...], self.lnf_bias[...], self.cfg.norm_eps).astype(dtype)
        return layers.dense(h, self.wte[...].astype(dtype).T, preferred_element_type=jnp.float32)
