"""GGUF (llama.cpp) LLaMA-family files -> parameter checkpoint.

Tensors are dequantized to float32 with `gguf.quants.dequantize`. llama.cpp's converter
permutes the rows of q/k projections (interleaved RoPE); we undo it exactly as
transformers' GGUF loader does, which brings them back to HF's rotate-half layout. The
tokenizer and chat template come through transformers' GGUF tokenizer support.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from easylm_imitate import checkpoint, model_names
from easylm_imitate.convert.hf_config import ConversionError
from easylm_imitate.convert.hf_weights import params_from_hf
from easylm_imitate.convert.output_dir import check_out, staged_output
from easylm_imitate.models import ModelConfig

SHIPPED = model_names.SHIPPED  # short names of GGUF files shipped by installable packages

_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
_LAYER = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
          "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
          "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj"}
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.weight$")


def resolve_gguf(path_or_name: str, flag: str | None = None) -> str:
    """A GGUF file path, or the path of a shipped file by short name (see model_names.SHIPPED).

    The shipping package is located with importlib and never imported. ConversionError names
    what is missing.
    """
    try:
        return model_names.gguf_path(path_or_name, flag)
    except model_names.NameResolutionError as e:
        raise ConversionError(str(e)) from None


def open_gguf(path: str):
    """A gguf.GGUFReader over `path`; ConversionError if it is not a readable GGUF file."""
    import gguf

    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise ConversionError(f"{path}: not a valid GGUF file ({e})") from None


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def config_from_gguf(reader) -> ModelConfig:
    """Our ModelConfig from a GGUF file's metadata (LLaMA architecture only)."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ConversionError(f"GGUF general.architecture={arch!r} is not supported (only 'llama')")

    def need(key):
        value = _field(reader, f"llama.{key}")
        if value is None:
            raise ConversionError(f"GGUF metadata llama.{key} is missing")
        return value

    tensors = {t.name for t in reader.tensors}
    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    head_dim = _field(reader, "llama.attention.key_length", _field(reader, "llama.rope.dimension_count"))
    head_dim = None if head_dim is None or int(head_dim) == hidden // heads else int(head_dim)
    vocab = _field(reader, "llama.vocab_size") or len(_field(reader, "tokenizer.ggml.tokens", []))
    # Float metadata is stored as float32; round away the float32 noise (9.99999974e-06 -> 1e-05).
    eps = float(f"{float(need('attention.layer_norm_rms_epsilon')):.6g}")
    if not eps > 0 or math.isinf(eps):
        raise ConversionError(f"GGUF metadata llama.attention.layer_norm_rms_epsilon={eps} must be a finite number > 0")
    return ModelConfig(
        arch="llama", vocab_size=int(vocab), hidden_size=hidden, intermediate_size=int(need("feed_forward_length")),
        num_layers=int(need("block_count")), num_heads=heads,
        num_kv_heads=int(_field(reader, "llama.attention.head_count_kv", heads)), head_dim=head_dim,
        max_position_embeddings=int(_field(reader, "llama.context_length", 2048)),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)), norm_eps=eps,
        tie_embeddings="output.weight" not in tensors,
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id"))


def hf_name(gguf_name: str) -> str | None:
    """The HF LLaMA tensor name of a GGUF tensor name, or None if it has none."""
    if gguf_name in _GLOBAL:
        return _GLOBAL[gguf_name]
    m = _LAYER_NAME.match(gguf_name)
    if m and m.group(2) in _LAYER:
        return f"model.layers.{m.group(1)}.{_LAYER[m.group(2)]}.weight"
    return None


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's row permutation of a q or k projection [heads*head_dim, in]."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def gguf_tensor_getter(reader, cfg: ModelConfig):
    """`get_tensor(hf_name) -> float32 array` over a GGUF file, in HF layout."""
    from gguf.quants import dequantize

    by_hf = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            raise ConversionError(f"GGUF tensor {t.name} has no place in a llama model")
        by_hf[name] = t

    def get_tensor(name: str) -> np.ndarray:
        t = by_hf[name]
        w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        if name.endswith("q_proj.weight"):
            w = unpermute_qk(w, cfg.num_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute_qk(w, cfg.kv_heads)
        return w

    return get_tensor


def load_gguf_tokenizer(path: str):
    """The HF tokenizer (with chat template) that transformers builds from a GGUF file."""
    return model_names.load_tokenizer(path)


def gguf_to_checkpoint(gguf: str, out: str | os.PathLike) -> str:
    """Convert a LLaMA-family GGUF file (path or shipped name) into a parameter checkpoint at `out`."""
    out = os.path.abspath(os.fspath(out))
    check_out(out)
    path = resolve_gguf(gguf)
    reader = open_gguf(path)
    cfg = config_from_gguf(reader)
    with staged_output(out) as staging:
        params = params_from_hf(cfg, gguf_tensor_getter(reader, cfg), source=path)
        tokenizer = load_gguf_tokenizer(path)
        import gguf as gguf_lib

        file_type = _field(reader, "general.file_type")
        meta = {"source": {"format": "gguf", "path": path, "name": _field(reader, "general.name"),
                           "file_type": gguf_lib.LlamaFileType(file_type).name if file_type is not None else None},
                "generation_config": {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id},
                "chat_template": _field(reader, "tokenizer.chat_template")}
        checkpoint.save_params(staging, cfg, params, tokenizer=tokenizer, extra_meta=meta)
    return out
