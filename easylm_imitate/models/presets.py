"""Named model shapes: the published configurations plus tiny ones for tests."""

from __future__ import annotations

from easylm_imitate.models.config import ModelConfig

_GPT2 = dict(arch="gpt2", vocab_size=50257, max_position_embeddings=1024, norm_eps=1e-5,
             tie_embeddings=True, bos_token_id=50256, eos_token_id=50256)
_LLAMA1 = dict(arch="llama", vocab_size=32000, max_position_embeddings=2048, norm_eps=1e-6)
_LLAMA2 = dict(arch="llama", vocab_size=32000, max_position_embeddings=4096, norm_eps=1e-5)

PRESETS: dict[str, ModelConfig] = {
    "gpt2": ModelConfig(hidden_size=768, intermediate_size=3072, num_layers=12, num_heads=12, **_GPT2),
    "gpt2-medium": ModelConfig(hidden_size=1024, intermediate_size=4096, num_layers=24, num_heads=16, **_GPT2),
    "gpt2-large": ModelConfig(hidden_size=1280, intermediate_size=5120, num_layers=36, num_heads=20, **_GPT2),
    "gpt2-xl": ModelConfig(hidden_size=1600, intermediate_size=6400, num_layers=48, num_heads=25, **_GPT2),
    "llama-7b": ModelConfig(hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32, **_LLAMA1),
    "llama-13b": ModelConfig(hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40, **_LLAMA1),
    "llama2-7b": ModelConfig(hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32, **_LLAMA2),
    "llama2-13b": ModelConfig(hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40, **_LLAMA2),
    "llama3-8b": ModelConfig(arch="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                             num_layers=32, num_heads=32, num_kv_heads=8, max_position_embeddings=8192,
                             rope_theta=500000.0, norm_eps=1e-5, bos_token_id=128000, eos_token_id=128001),
    "llama-1b": ModelConfig(arch="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                            num_layers=22, num_heads=32, num_kv_heads=4, max_position_embeddings=2048,
                            norm_eps=1e-5),
    "smollm2-135m": ModelConfig(arch="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                num_layers=30, num_heads=9, num_kv_heads=3, max_position_embeddings=8192,
                                rope_theta=100000.0, norm_eps=1e-5, tie_embeddings=True,
                                bos_token_id=1, eos_token_id=2),
    # Tiny shapes for tests and smoke runs (sizes divisible by 8 so every mesh can split them).
    "tiny-llama": ModelConfig(arch="llama", vocab_size=512, hidden_size=64, intermediate_size=128,
                              num_layers=2, num_heads=4, num_kv_heads=2, max_position_embeddings=256,
                              rope_theta=10000.0, norm_eps=1e-5),
    "tiny-llama-tied": ModelConfig(arch="llama", vocab_size=512, hidden_size=64, intermediate_size=128,
                                   num_layers=2, num_heads=4, num_kv_heads=4, max_position_embeddings=256,
                                   rope_theta=100000.0, norm_eps=1e-6, tie_embeddings=True),
    "tiny-gpt2": ModelConfig(hidden_size=64, intermediate_size=256, num_layers=2, num_heads=4,
                             **{**_GPT2, "vocab_size": 512, "max_position_embeddings": 256,
                                "bos_token_id": 511, "eos_token_id": 511}),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """The preset `name`, with optional field overrides; unknown names list the choices."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
