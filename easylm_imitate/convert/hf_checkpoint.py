"""Hugging Face model directory <-> parameter checkpoint, with config, tokenizer and
generation settings carried across."""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from easylm_imitate import checkpoint
from easylm_imitate.convert.hf_config import ConversionError, config_from_hf, config_to_hf
from easylm_imitate.convert.hf_weights import params_from_hf, params_to_hf, tied_head_conflict, unexpected_tensors
from easylm_imitate.convert.output_dir import check_out, staged_output
from easylm_imitate.convert.safetensors_dir import SafetensorsReader, write_safetensors
from easylm_imitate.model_names import TOKENIZER_FILES, load_tokenizer
from easylm_imitate.models import ModelConfig

EXPORT_DTYPES = ("float32", "bfloat16")


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise ConversionError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def load_hf_tokenizer(hf_dir: str):
    """The tokenizer saved in a HF model directory, or None when it has no tokenizer files."""
    if not any(os.path.isfile(os.path.join(hf_dir, n)) for n in TOKENIZER_FILES):
        logging.warning("%s: no tokenizer files; the checkpoint will have no tokenizer", hf_dir)
        return None
    try:
        return load_tokenizer(hf_dir)
    except Exception as e:  # transformers raises many kinds; the user needs the file and the reason
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"{hf_dir}: cannot load the tokenizer ({reason})") from e


def hf_dir_to_checkpoint(hf_dir: str | os.PathLike, out: str | os.PathLike) -> str:
    """Convert a local `save_pretrained` directory (safetensors) into a parameter checkpoint.

    Reads tensors one at a time; writes `out` atomically (nothing appears there on error).
    Returns the checkpoint path.
    """
    hf_dir, out = os.path.abspath(os.fspath(hf_dir)), os.path.abspath(os.fspath(out))
    if not os.path.isdir(hf_dir):
        raise ConversionError(f"{hf_dir}: no such directory")
    config_path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(config_path):
        raise ConversionError(f"{config_path}: missing (not a Hugging Face model directory)")
    check_out(out)
    hf_config = _read_json(config_path)
    cfg = config_from_hf(hf_config, config_path)
    with staged_output(out) as staging, SafetensorsReader(hf_dir) as reader:
        names = reader.keys()
        if cfg.arch == "gpt2":  # checkpoints saved from GPT2Model lack the `transformer.` prefix
            names = {n if n.startswith(("transformer.", "lm_head.")) else "transformer." + n: n for n in names}
        else:
            names = {n: n for n in names}
        extra = unexpected_tensors(cfg, names)
        if extra:
            raise ConversionError(f"{hf_dir}: tensor {extra[0]} has no place in a {cfg.arch} model "
                                  f"({len(extra)} unexpected tensors)")

        def get_tensor(name):
            return reader.get_tensor(names[name])

        conflict = tied_head_conflict(cfg, names, get_tensor)
        if conflict:
            raise ConversionError(f"{hf_dir}: {conflict}")
        params = params_from_hf(cfg, get_tensor, source=hf_dir)
        tokenizer = load_hf_tokenizer(hf_dir)
        gen_path = os.path.join(hf_dir, "generation_config.json")
        meta = {"source": {"format": "hf", "path": hf_dir, "architectures": hf_config.get("architectures")},
                "generation_config": _read_json(gen_path) if os.path.isfile(gen_path) else None,
                "chat_template": getattr(tokenizer, "chat_template", None)}
        checkpoint.save_params(staging, cfg, params, tokenizer=tokenizer, extra_meta=meta)
    return out


def generation_config(cfg: ModelConfig, meta: dict | None) -> dict:
    """generation_config.json contents: the imported one when known, else bos/eos from the config."""
    saved = dict((meta or {}).get("generation_config") or {})
    saved.pop("transformers_version", None)
    base = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
    return {**base, **saved}


def write_hf_dir(out: str | os.PathLike, cfg: ModelConfig, params, tokenizer=None, meta: dict | None = None,
                 dtype: str = "float32", max_shard_size: int | str = "5GB") -> str:
    """Write a HF `save_pretrained`-style directory atomically: safetensors (sharded above
    `max_shard_size`), config.json, generation_config.json and the tokenizer files."""
    out = os.path.abspath(os.fspath(out))
    if dtype not in EXPORT_DTYPES:
        raise ConversionError(f"dtype: expected one of {EXPORT_DTYPES}, got {dtype!r}")
    check_out(out)
    np_dtype = np.float32
    if dtype == "bfloat16":
        import ml_dtypes

        np_dtype = ml_dtypes.bfloat16
    with staged_output(out) as tmp:
        os.mkdir(tmp)
        tensors = params_to_hf(cfg, params, np_dtype)
        write_safetensors(tmp, tensors, max_shard_size)
        del tensors
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config_to_hf(cfg, dtype), f, indent=2)
        with open(os.path.join(tmp, "generation_config.json"), "w", encoding="utf-8") as f:
            json.dump(generation_config(cfg, meta), f, indent=2)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out


def checkpoint_to_hf_dir(checkpoint_dir: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32",
                         max_shard_size: int | str = "5GB") -> str:
    """Export a parameter checkpoint or a training run (its latest step) as a HF directory."""
    import easylm_imitate
    from flax import nnx

    checkpoint_dir, out = os.path.abspath(os.fspath(checkpoint_dir)), os.path.abspath(os.fspath(out))
    check_out(out)
    if dtype not in EXPORT_DTYPES:
        raise ConversionError(f"dtype: expected one of {EXPORT_DTYPES}, got {dtype!r}")
    model, tokenizer = easylm_imitate.load(checkpoint_dir)
    meta = None
    if os.path.isfile(os.path.join(checkpoint_dir, checkpoint.META_FILE)):
        meta = checkpoint.read_meta(checkpoint_dir)
    params = nnx.state(model, nnx.Param).to_pure_dict()
    cfg = model.cfg.replace(dtype="float32", remat="none", attention="xla")
    return write_hf_dir(out, cfg, params, tokenizer, meta, dtype, max_shard_size)
