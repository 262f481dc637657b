"""A tiny checkpoint that often ends text: end-of-sequence is the greedy next token at a
good share of positions, so tests see generations (and scored continuations) end with it."""

from __future__ import annotations

import os

import torch
from flax import nnx
from models.hf_helpers import TINY_TOKENIZER, random_hf_model
from transformers import AutoTokenizer

from easylm_imitate import checkpoint
from easylm_imitate.convert.hf_weights import from_torch_model


def eos_prone_hf_model(seed: int = 15, boost: float = 3.0):
    """A random tiny LLaMA (transformers, float32, eval mode) whose output row for the tiny
    tokenizer's EOS token is scaled by `boost` (3 makes EOS greedy at ~1/3 of positions)."""
    model = random_hf_model("tiny-llama", seed=seed)
    eos = AutoTokenizer.from_pretrained(TINY_TOKENIZER).eos_token_id
    with torch.no_grad():
        model.lm_head.weight[eos] *= boost
    return model


def save_eos_prone_checkpoint(path: str | os.PathLike, seed: int = 15) -> tuple[object, str]:
    """(transformers model, checkpoint dir): the model above saved as a parameter checkpoint
    with the tiny tokenizer."""
    hf = eos_prone_hf_model(seed)
    ours = from_torch_model(hf)
    tok = AutoTokenizer.from_pretrained(TINY_TOKENIZER)
    return hf, checkpoint.save_params(path, ours.cfg, nnx.state(ours).to_pure_dict(), tokenizer=tok)
