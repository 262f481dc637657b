"""Model configuration in Hugging Face `config.json` form <-> our `ModelConfig`."""

from __future__ import annotations

from collections.abc import Mapping

from easylm_imitate.models import ModelConfig

# Hugging Face architecture class / model_type -> our family.
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "GPT2LMHeadModel": "gpt2"}
MODEL_TYPES = {"llama": "llama", "mistral": "llama", "gpt2": "gpt2"}


class ConversionError(ValueError):
    """Input that cannot be converted: unknown architecture, unsupported option, bad tensor."""


def hf_arch(hf_config: Mapping) -> str:
    """Our family ('llama' or 'gpt2') for a HF config dict; ConversionError if unsupported."""
    archs = list(hf_config.get("architectures") or [])
    for name in archs:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    model_type = hf_config.get("model_type")
    if not archs and model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    found = archs or model_type
    raise ConversionError(f"unsupported architecture {found!r} (supported: {', '.join(sorted(ARCHITECTURES))})")


def _first(token_id):
    """HF allows a list of eos ids; we keep the first."""
    if isinstance(token_id, (list, tuple)):
        return token_id[0] if token_id else None
    return token_id


def _require(hf_config: Mapping, key: str, allowed, default) -> None:
    value = hf_config.get(key, default)
    if value not in allowed:
        raise ConversionError(f"config.json: {key}={value!r} is not supported (expected one of {list(allowed)})")


def _rope_theta(hf_config: Mapping) -> float:
    """RoPE base from `rope_parameters` (transformers >= 5) or legacy `rope_theta`/`rope_scaling`."""
    rope = dict(hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ConversionError(f"config.json: rope_type={rope_type!r} is not supported (only 'default' RoPE)")
    return float(rope.get("rope_theta", hf_config.get("rope_theta", 10000.0)))


def _llama_from_hf(c: Mapping) -> ModelConfig:
    _require(c, "hidden_act", ("silu",), "silu")
    _require(c, "attention_bias", (False,), False)
    _require(c, "mlp_bias", (False,), False)
    heads = c["num_attention_heads"]
    head_dim = c.get("head_dim")
    if head_dim == c["hidden_size"] // heads:
        head_dim = None
    window = c.get("sliding_window")
    if window is not None and window < c.get("max_position_embeddings", 2048):
        raise ConversionError(f"config.json: sliding_window={window} is not supported (full attention only)")
    return ModelConfig(
        arch="llama", vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"], num_layers=c["num_hidden_layers"], num_heads=heads,
        num_kv_heads=c.get("num_key_value_heads") or heads, head_dim=head_dim,
        max_position_embeddings=c.get("max_position_embeddings", 2048), rope_theta=_rope_theta(c),
        norm_eps=c.get("rms_norm_eps", 1e-6), tie_embeddings=bool(c.get("tie_word_embeddings", False)),
        bos_token_id=_first(c.get("bos_token_id")), eos_token_id=_first(c.get("eos_token_id")))


def _gpt2_from_hf(c: Mapping) -> ModelConfig:
    _require(c, "activation_function", ("gelu_new", "gelu_pytorch_tanh"), "gelu_new")
    _require(c, "scale_attn_weights", (True,), True)
    _require(c, "scale_attn_by_inverse_layer_idx", (False,), False)
    _require(c, "tie_word_embeddings", (True,), True)
    d = c["n_embd"]
    return ModelConfig(
        arch="gpt2", vocab_size=c["vocab_size"], hidden_size=d, intermediate_size=c.get("n_inner") or 4 * d,
        num_layers=c["n_layer"], num_heads=c["n_head"], max_position_embeddings=c["n_positions"],
        norm_eps=c.get("layer_norm_epsilon", 1e-5), tie_embeddings=True,
        bos_token_id=_first(c.get("bos_token_id")), eos_token_id=_first(c.get("eos_token_id")))


def config_from_hf(hf_config: Mapping) -> ModelConfig:
    """Our ModelConfig for a HF config.json dict (LLaMA/Mistral-style or GPT-2).

    Options our models do not implement (biases in LLaMA attention, non-default RoPE
    scaling, sliding windows, other activations) raise ConversionError naming the field.
    """
    arch = hf_arch(hf_config)
    try:
        return _llama_from_hf(hf_config) if arch == "llama" else _gpt2_from_hf(hf_config)
    except KeyError as e:
        raise ConversionError(f"config.json: missing field {e.args[0]!r} for {arch}") from None


def config_to_hf(cfg: ModelConfig, dtype: str = "float32") -> dict:
    """A HF config.json dict (loadable by AutoModelForCausalLM) for our ModelConfig."""
    common = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "dtype": dtype,
              "vocab_size": cfg.vocab_size, "use_cache": True}
    if cfg.arch == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", **common,
                "n_embd": cfg.hidden_size, "n_inner": cfg.intermediate_size, "n_layer": cfg.num_layers,
                "n_head": cfg.num_heads, "n_positions": cfg.max_position_embeddings,
                "layer_norm_epsilon": cfg.norm_eps, "activation_function": "gelu_new",
                "tie_word_embeddings": True}
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **common,
            "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
            "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.dim_per_head,
            "max_position_embeddings": cfg.max_position_embeddings, "rms_norm_eps": cfg.norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
            "tie_word_embeddings": cfg.tie_embeddings}
