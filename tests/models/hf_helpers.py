"""Random-weight transformers models in our presets' shapes, saved as HF directories."""

import os

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from easylm_imitate.convert.hf_config import config_to_hf
from easylm_imitate.models import get_preset

TINY_TOKENIZER = os.path.join(os.path.dirname(__import__("easylm_imitate").__file__), "assets", "tiny_tokenizer")


def random_hf_model(preset: str, seed: int = 0, std: float = 0.1):
    """A float32 transformers model in eval mode with the preset's shape and random weights
    (norm scales and biases random too, so a swapped tensor cannot go unnoticed)."""
    cfg = get_preset(preset)
    hf = config_to_hf(cfg)
    hf_config = AutoConfig.for_model(hf.pop("model_type"), **hf)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_scale = p.ndim == 1 and name.endswith("weight")  # RMSNorm/LayerNorm scales
            p.normal_(1.0 if is_scale else 0.0, std)
    return model


def save_hf_dir(model, path) -> str:
    """save_pretrained (safetensors) plus the tiny tokenizer; returns the directory."""
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(TINY_TOKENIZER).save_pretrained(path)
    return str(path)


def torch_logits(model, ids: np.ndarray, attention_mask=None, position_ids=None) -> np.ndarray:
    """float32 logits of a transformers model."""
    kwargs = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.from_numpy(np.asarray(attention_mask))
    if position_ids is not None:
        kwargs["position_ids"] = torch.from_numpy(np.asarray(position_ids))
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(ids)), **kwargs).logits.float().numpy()


def load_state(path) -> dict:
    """Every tensor of a saved HF directory as numpy (float32 view of bf16 kept as-is)."""
    from easylm_imitate.convert.safetensors_dir import SafetensorsReader

    with SafetensorsReader(path) as reader:
        return {k: reader.get_tensor(k) for k in reader.keys()}
