"""GPT-2 family: learned positions, LayerNorm with bias, GELU MLP, tied head."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from easylm_imitate.models import layers
from easylm_imitate.models.base import Blocks, DecoderLM, cached_attention, new_param
from easylm_imitate.models.config import ModelConfig


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

    def block(self, p, x, context, mask, layer_cache, index):
        """Pre-LayerNorm attention then pre-LayerNorm GELU MLP, each with a residual."""
        cfg, dtype = self.cfg, x.dtype
        h = layers.layer_norm(x, p["ln1_scale"], p["ln1_bias"], cfg.norm_eps).astype(dtype)
        q = layers.project(h, p["wq"], "q_proj", p["bq"])
        k = layers.project(h, p["wk"], "k_proj", p["bk"])
        v = layers.project(h, p["wv"], "v_proj", p["bv"])
        attn, new_cache = cached_attention(cfg, q, k, v, mask, layer_cache, index)
        x = x + layers.project(attn, p["wo"], "o_proj", p["bo"], in_dims=2)
        h = layers.layer_norm(x, p["ln2_scale"], p["ln2_bias"], cfg.norm_eps).astype(dtype)
        h = layers.gelu(layers.project(h, p["w_fc"], "mlp_up", p["b_fc"]))
        x = x + layers.project(h, p["w_proj"], "mlp_down", p["b_proj"])
        return x, new_cache

    def head(self, x, dtype):
        """Final LayerNorm and the tied output projection, float32 logits."""
        h = layers.layer_norm(x, self.lnf_scale[...], self.lnf_bias[...], self.cfg.norm_eps).astype(dtype)
        return layers.dense(h, self.wte[...].astype(dtype).T, preferred_element_type=jnp.float32)
