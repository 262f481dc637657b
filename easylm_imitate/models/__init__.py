"""Flax NNX decoder-only language models: LLaMA family and GPT-2 family."""

from __future__ import annotations

from flax import nnx

from easylm_imitate.models.base import DecoderLM, KVCache
from easylm_imitate.models.config import ModelConfig
from easylm_imitate.models.gpt2 import GPT2
from easylm_imitate.models.llama import Llama
from easylm_imitate.models.presets import PRESETS, get_preset

__all__ = ["DecoderLM", "GPT2", "KVCache", "Llama", "ModelConfig", "PRESETS", "build_model", "get_preset"]


def build_model(cfg: ModelConfig, seed: int = 0) -> DecoderLM:
    """A randomly initialised model of the configured family."""
    cls = {"llama": Llama, "gpt2": GPT2}[cfg.arch]
    return cls(cfg, rngs=nnx.Rngs(params=seed))
