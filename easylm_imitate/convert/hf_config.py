"""Model configuration in Hugging Face `config.json` form <-> our `ModelConfig`."""

from __future__ import annotations

import math
from collections.abc import Mapping

from easylm_imitate.models import ModelConfig

# Hugging Face architecture class / model_type -> our family.
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "GPT2LMHeadModel": "gpt2"}
MODEL_TYPES = {"llama": "llama", "mistral": "llama", "gpt2": "gpt2"}
_REQUIRED = object()


class ConversionError(ValueError):
    """Input that cannot be converted: unknown architecture, unsupported option, bad tensor."""


def hf_arch(hf_config: Mapping, source: str = "config.json") -> str:
    """Our family ('llama' or 'gpt2') for a HF config dict; ConversionError if unsupported."""
    archs = hf_config.get("architectures") or []
    if isinstance(archs, str):
        archs = [archs]
    if not isinstance(archs, list):
        raise ConversionError(f"{source}: field architectures={archs!r} must be a list of class names")
    for name in archs:
        if isinstance(name, str) and name in ARCHITECTURES:
            return ARCHITECTURES[name]
    model_type = hf_config.get("model_type")
    if not archs and isinstance(model_type, str) and model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    found = archs or model_type
    raise ConversionError(f"{source}: unsupported architecture {found!r} "
                          f"(supported: {', '.join(sorted(ARCHITECTURES))})")


class _Fields:
    """Typed reads of config.json fields: a missing, mistyped or out-of-range value raises
    ConversionError naming the file and the field."""

    def __init__(self, hf_config: Mapping, source: str, arch: str):
        self.c, self.source, self.arch = hf_config, source, arch

    def error(self, key: str, value, want: str) -> ConversionError:
        """The error for field `key` holding `value` where `want` was expected."""
        return ConversionError(f"{self.source}: field {key}={value!r} {want}")

    def _get(self, key: str, default):
        if key in self.c and self.c[key] is not None:
            return self.c[key]
        if default is _REQUIRED:
            raise ConversionError(f"{self.source}: missing field {key!r} for {self.arch}")
        return default

    def integer(self, key: str, default=_REQUIRED, minimum: int = 1):
        """An integer >= `minimum` (None stays None when it is the default)."""
        value = self._get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, value, f"must be an integer >= {minimum}")
        return value

    def positive(self, key: str, default=_REQUIRED, value=None) -> float:
        """A finite number > 0 (`value` given: check that instead of reading the field)."""
        value = self._get(key, default) if value is None else value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise self.error(key, value, "must be a finite number > 0")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        """true or false."""
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, value, "must be true or false")
        return value

    def token_id(self, key: str):
        """A token id >= 0, or None; of a list of ids (HF allows several eos ids) the first."""
        value = self._get(key, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(key, self.c[key], "must be a token id (integer >= 0), a list of them, or null")
        return value

    def require(self, key: str, allowed, default) -> None:
        """The field holds one of `allowed` (an option our models implement)."""
        value = self.c.get(key, default)
        if value not in allowed or type(value) is not type(allowed[0]):
            raise ConversionError(f"{self.source}: {key}={value!r} is not supported "
                                  f"(expected one of {list(allowed)})")

    def heads(self, heads_key: str, kv_key: str | None, hidden_key: str, hidden: int,
              head_dim: int | None) -> tuple[int, int]:
        """(heads, kv heads), checked to split `hidden` (unless head_dim is given) and to group."""
        heads = self.integer(heads_key)
        kv = self.integer(kv_key, heads) if kv_key else heads
        if head_dim is None and hidden % heads:
            raise self.error(heads_key, heads, f"does not divide {hidden_key}={hidden} (and no head_dim is given)")
        if heads % kv:
            raise self.error(kv_key, kv, f"does not divide {heads_key}={heads}")
        return heads, kv


def _rope_theta(f: _Fields) -> float:
    """RoPE base from `rope_parameters` (transformers >= 5) or legacy `rope_theta`/`rope_scaling`."""
    key = "rope_parameters" if f.c.get("rope_parameters") is not None else "rope_scaling"
    rope = f.c.get(key) or {}
    if not isinstance(rope, Mapping):
        raise f.error(key, rope, "must be an object")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ConversionError(f"{f.source}: rope_type={rope_type!r} is not supported (only 'default' RoPE)")
    if "rope_theta" in rope:
        return f.positive(f"{key}.rope_theta", value=rope["rope_theta"])
    return f.positive("rope_theta", 10000.0)


def _llama_from_hf(f: _Fields) -> ModelConfig:
    f.require("hidden_act", ("silu",), "silu")
    f.require("attention_bias", (False,), False)
    f.require("mlp_bias", (False,), False)
    hidden = f.integer("hidden_size")
    head_dim = f.integer("head_dim", None)
    heads, kv = f.heads("num_attention_heads", "num_key_value_heads", "hidden_size", hidden, head_dim)
    if head_dim == hidden // heads:
        head_dim = None
    max_pos = f.integer("max_position_embeddings", 2048)
    window = f.integer("sliding_window", None)
    if window is not None and window < max_pos:
        raise ConversionError(f"{f.source}: sliding_window={window} is not supported (full attention only)")
    return ModelConfig(
        arch="llama", vocab_size=f.integer("vocab_size"), hidden_size=hidden,
        intermediate_size=f.integer("intermediate_size"), num_layers=f.integer("num_hidden_layers"), num_heads=heads,
        num_kv_heads=kv, head_dim=head_dim, max_position_embeddings=max_pos, rope_theta=_rope_theta(f),
        norm_eps=f.positive("rms_norm_eps", 1e-6), tie_embeddings=f.flag("tie_word_embeddings", False),
        bos_token_id=f.token_id("bos_token_id"), eos_token_id=f.token_id("eos_token_id"))


def _gpt2_from_hf(f: _Fields) -> ModelConfig:
    f.require("activation_function", ("gelu_new", "gelu_pytorch_tanh"), "gelu_new")
    f.require("scale_attn_weights", (True,), True)
    f.require("scale_attn_by_inverse_layer_idx", (False,), False)
    f.require("tie_word_embeddings", (True,), True)
    d = f.integer("n_embd")
    heads, _ = f.heads("n_head", None, "n_embd", d, None)
    return ModelConfig(
        arch="gpt2", vocab_size=f.integer("vocab_size"), hidden_size=d, intermediate_size=f.integer("n_inner", 4 * d),
        num_layers=f.integer("n_layer"), num_heads=heads, max_position_embeddings=f.integer("n_positions"),
        norm_eps=f.positive("layer_norm_epsilon", 1e-5), tie_embeddings=True,
        bos_token_id=f.token_id("bos_token_id"), eos_token_id=f.token_id("eos_token_id"))


def config_from_hf(hf_config: Mapping, source: str = "config.json") -> ModelConfig:
    """Our ModelConfig for a HF config.json dict (LLaMA/Mistral-style or GPT-2).

    Options our models do not implement (biases in LLaMA attention, non-default RoPE
    scaling, sliding windows, other activations) and missing, mistyped or out-of-range
    values (sizes < 1, a norm epsilon <= 0, heads that do not divide the width) raise
    ConversionError naming `source` (the file) and the field.
    """
    if not isinstance(hf_config, Mapping):
        raise ConversionError(f"{source}: expected a JSON object, got {type(hf_config).__name__}")
    arch = hf_arch(hf_config, source)
    fields = _Fields(hf_config, source, arch)
    try:
        return _llama_from_hf(fields) if arch == "llama" else _gpt2_from_hf(fields)
    except ConversionError:
        raise
    except ValueError as e:  # ModelConfig's own checks
        raise ConversionError(f"{source}: {e}") from None


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
