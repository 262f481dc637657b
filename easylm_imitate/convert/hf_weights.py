"""Hugging Face tensors <-> our stacked parameter dict (LLaMA family and GPT-2).

HF keeps one tensor per layer (`model.layers.{i}...`); we keep each parameter stacked over
layers (axis 0). LLaMA Linear weights are [out, in] and are transposed; GPT-2 Conv1D weights
are already [in, out] and `c_attn` packs q, k, v on its last axis. RoPE is rotate-half on
both sides, so q/k need no head permutation.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from tqdm import tqdm

from easylm_imitate.convert.hf_config import ConversionError, config_from_hf, config_to_hf
from easylm_imitate.models import ModelConfig

__all__ = ["ConversionError", "TensorMap", "config_from_hf", "config_to_hf", "from_torch_model",
           "model_from_params", "params_from_hf", "params_to_hf", "tensor_maps", "to_torch_model",
           "tied_head_conflict", "to_torch_state_dict", "unexpected_tensors"]

# Buffers some HF checkpoints carry that are not parameters.
_IGNORED = re.compile(r"(rotary_emb\.inv_freq|\.attn\.bias|\.attn\.masked_bias)$")


@dataclasses.dataclass(frozen=True)
class TensorMap:
    """One HF tensor <-> one or more of our parameters (several when HF packs them).

    The HF tensor (transposed first when `transpose`) is split evenly on its last axis into
    `len(ours)` parts, each reshaped to `our_shape`. `layered`: `hf` has an `{i}` for the
    layer and our parameters are stacked over layers.
    """

    hf: str
    hf_shape: tuple[int, ...]
    ours: tuple[str, ...]
    our_shape: tuple[int, ...]
    transpose: bool = False
    layered: bool = False

    def to_ours(self, w: np.ndarray) -> list[np.ndarray]:
        """Our parameter slices from the HF tensor."""
        a = w.T if self.transpose else w
        return [p.reshape(self.our_shape) for p in np.split(a, len(self.ours), axis=-1)]

    def to_hf(self, parts: Iterable[np.ndarray]) -> np.ndarray:
        """The HF tensor from our parameter slices."""
        shape = self.hf_shape[::-1] if self.transpose else self.hf_shape
        part_shape = shape[:-1] + (shape[-1] // len(self.ours),)
        a = np.concatenate([np.asarray(p).reshape(part_shape) for p in parts], axis=-1)
        return np.ascontiguousarray(a.T if self.transpose else a)


def _llama_maps(cfg: ModelConfig) -> list[TensorMap]:
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    h, hkv, hd = cfg.num_heads, cfg.kv_heads, cfg.dim_per_head
    layer = "model.layers.{i}."
    maps = [TensorMap("model.embed_tokens.weight", (v, d), ("embed_tokens",), (v, d)),
            TensorMap("model.norm.weight", (d,), ("final_norm",), (d,))]
    if not cfg.tie_embeddings:
        maps.append(TensorMap("lm_head.weight", (v, d), ("lm_head",), (d, v), transpose=True))
    for hf, hf_shape, ours, our_shape, transpose in [
        ("input_layernorm.weight", (d,), "attn_norm", (d,), False),
        ("self_attn.q_proj.weight", (h * hd, d), "wq", (d, h, hd), True),
        ("self_attn.k_proj.weight", (hkv * hd, d), "wk", (d, hkv, hd), True),
        ("self_attn.v_proj.weight", (hkv * hd, d), "wv", (d, hkv, hd), True),
        ("self_attn.o_proj.weight", (d, h * hd), "wo", (h, hd, d), True),
        ("post_attention_layernorm.weight", (d,), "mlp_norm", (d,), False),
        ("mlp.gate_proj.weight", (f, d), "w_gate", (d, f), True),
        ("mlp.up_proj.weight", (f, d), "w_up", (d, f), True),
        ("mlp.down_proj.weight", (d, f), "w_down", (f, d), True),
    ]:
        maps.append(TensorMap(layer + hf, hf_shape, ("blocks/" + ours,), our_shape, transpose, layered=True))
    return maps


def _gpt2_maps(cfg: ModelConfig) -> list[TensorMap]:
    d, f, v, p = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings
    h, hd = cfg.num_heads, cfg.dim_per_head
    maps = [TensorMap("transformer.wte.weight", (v, d), ("wte",), (v, d)),
            TensorMap("transformer.wpe.weight", (p, d), ("wpe",), (p, d)),
            TensorMap("transformer.ln_f.weight", (d,), ("lnf_scale",), (d,)),
            TensorMap("transformer.ln_f.bias", (d,), ("lnf_bias",), (d,))]
    for hf, hf_shape, ours, our_shape in [
        ("ln_1.weight", (d,), ("ln1_scale",), (d,)),
        ("ln_1.bias", (d,), ("ln1_bias",), (d,)),
        ("attn.c_attn.weight", (d, 3 * h * hd), ("wq", "wk", "wv"), (d, h, hd)),
        ("attn.c_attn.bias", (3 * h * hd,), ("bq", "bk", "bv"), (h, hd)),
        ("attn.c_proj.weight", (h * hd, d), ("wo",), (h, hd, d)),
        ("attn.c_proj.bias", (d,), ("bo",), (d,)),
        ("ln_2.weight", (d,), ("ln2_scale",), (d,)),
        ("ln_2.bias", (d,), ("ln2_bias",), (d,)),
        ("mlp.c_fc.weight", (d, f), ("w_fc",), (d, f)),
        ("mlp.c_fc.bias", (f,), ("b_fc",), (f,)),
        ("mlp.c_proj.weight", (f, d), ("w_proj",), (f, d)),
        ("mlp.c_proj.bias", (d,), ("b_proj",), (d,)),
    ]:
        maps.append(TensorMap("transformer.h.{i}." + hf, hf_shape, tuple("blocks/" + o for o in ours),
                              our_shape, layered=True))
    return maps


def tensor_maps(cfg: ModelConfig) -> list[TensorMap]:
    """Every HF tensor of a model with this config and where it goes."""
    return _llama_maps(cfg) if cfg.arch == "llama" else _gpt2_maps(cfg)


def _hf_names(cfg: ModelConfig) -> list[str]:
    return [m.hf.format(i=i) for m in tensor_maps(cfg) for i in (range(cfg.num_layers) if m.layered else [0])]


def unexpected_tensors(cfg: ModelConfig, names: Iterable[str]) -> list[str]:
    """Names in a HF checkpoint that this config has no place for (known buffers and a tied
    `lm_head.weight` excepted): a sign of a different architecture or config."""
    expected = set(_hf_names(cfg))
    ignored = {"lm_head.weight"} if cfg.tie_embeddings else set()
    return sorted(n for n in names if n not in expected and n not in ignored and not _IGNORED.search(n))


def tied_head_conflict(cfg: ModelConfig, names: Iterable[str], get_tensor: Callable[[str], np.ndarray]) -> str | None:
    """Why a checkpoint whose config ties the output layer to the embedding cannot be
    converted, or None: an `lm_head.weight` it carries anyway must equal the embedding
    (it is dropped, as transformers drops it on load), else converting would silently
    change the model's logits."""
    if not cfg.tie_embeddings or "lm_head.weight" not in set(names):
        return None
    embed_name = "model.embed_tokens.weight" if cfg.arch == "llama" else "transformer.wte.weight"
    head, embed = np.asarray(get_tensor("lm_head.weight")), np.asarray(get_tensor(embed_name))
    if head.shape != embed.shape:
        return f"lm_head.weight has shape {head.shape} but the tied {embed_name} has {embed.shape}"
    if np.array_equal(head, embed):
        return None
    diff = float(np.max(np.abs(head.astype(np.float32) - embed.astype(np.float32))))
    fix = ("config.json says tie_word_embeddings=true; set it to false to keep the separate output layer"
           if cfg.arch == "llama" else "GPT-2 always ties them (a separate output layer is not supported)")
    return f"lm_head.weight differs from {embed_name} (max abs difference {diff:.3g}), but {fix}"


def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def _get(tree: Mapping, path: str):
    for p in path.split("/"):
        tree = tree[p]
    return tree


def params_from_hf(cfg: ModelConfig, get_tensor: Callable[[str], np.ndarray], progress: bool = True,
                   source: str | None = None) -> dict:
    """Our stacked float32 parameter dict, reading HF tensors one at a time with `get_tensor(name)`.

    Raises ConversionError naming the tensor (after `source`, e.g. the directory, when
    given) when one is missing, its shape does not match the config, or it holds NaN or
    infinite values (a model that would only ever give NaN logits).
    """
    where = f"{source}: " if source else ""
    maps = tensor_maps(cfg)
    total = sum(cfg.num_layers if m.layered else 1 for m in maps)
    params: dict = {}
    with tqdm(total=total, desc="tensors", unit="tensor", disable=None if progress else True) as bar:
        for m in maps:
            layers = range(cfg.num_layers) if m.layered else [None]
            stacks = [np.empty(((cfg.num_layers,) if m.layered else ()) + m.our_shape, np.float32) for _ in m.ours]
            for i in layers:
                name = m.hf.format(i=i)
                try:
                    w = np.asarray(get_tensor(name))
                except KeyError:
                    raise ConversionError(f"{where}tensor {name} is missing from the checkpoint") from None
                if tuple(w.shape) != m.hf_shape:
                    raise ConversionError(f"{where}tensor {name} has shape {tuple(w.shape)}, but the config needs "
                                          f"{m.hf_shape}")
                w = w.astype(np.float32, copy=False)
                bad = w.size - int(np.count_nonzero(np.isfinite(w)))
                if bad:
                    raise ConversionError(f"{where}tensor {name} has {bad} non-finite values (NaN or inf) of "
                                          f"{w.size}; refusing to write a model that gives NaN logits")
                for stack, part in zip(stacks, m.to_ours(w)):
                    if i is None:
                        stack[...] = part
                    else:
                        stack[i] = part
                bar.update(1)
            for path, stack in zip(m.ours, stacks):
                _set(params, path, stack)
    return params


def params_to_hf(cfg: ModelConfig, params: Mapping, dtype=np.float32) -> dict[str, np.ndarray]:
    """HF tensors (name -> array of `dtype`, e.g. np.float32 or ml_dtypes.bfloat16) from our
    stacked parameter dict (numpy or JAX arrays)."""
    out: dict[str, np.ndarray] = {}
    for m in tensor_maps(cfg):
        stacks = [np.asarray(_get(params, path)) for path in m.ours]
        for i in range(cfg.num_layers) if m.layered else [None]:
            parts = stacks if i is None else [s[i] for s in stacks]
            out[m.hf.format(i=i)] = m.to_hf(parts).astype(dtype, copy=False)
    return out


def model_from_params(cfg: ModelConfig, params: Mapping, mesh=None, rules: str = "fsdp_tp"):
    """Our model holding `params` (a stacked parameter dict), on one device or sharded on `mesh`."""
    import jax

    from easylm_imitate.api import model_from_params as _build

    def place(target):
        return jax.tree.map(lambda t, a: jax.device_put(np.asarray(a, np.float32), t.sharding), target,
                            dict(params))

    return _build(cfg, place, mesh, rules)


def from_torch_model(hf_model, **runtime):
    """Our model with the weights of a transformers PyTorch model (LLaMA family or GPT-2).

    `runtime` overrides runtime config fields (dtype, remat, attention).
    """
    cfg = config_from_hf(hf_model.config.to_dict()).replace(**runtime)
    state = {k: v.detach().float().cpu().numpy() for k, v in hf_model.state_dict().items()}
    return model_from_params(cfg, params_from_hf(cfg, state.__getitem__, progress=False))


def to_torch_state_dict(model) -> dict:
    """The HF PyTorch state dict (float32 torch tensors) of our model."""
    import torch
    from flax import nnx

    tensors = params_to_hf(model.cfg, nnx.state(model, nnx.Param).to_pure_dict())
    return {k: torch.from_numpy(v) for k, v in tensors.items()}


def to_torch_model(model):
    """A transformers PyTorch model (eval mode, float32) with our model's weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    hf = config_to_hf(model.cfg)
    hf_config = AutoConfig.for_model(hf.pop("model_type"), **hf)
    torch_model = AutoModelForCausalLM.from_config(hf_config)
    missing, unexpected = torch_model.load_state_dict(to_torch_state_dict(model), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.cfg.tie_embeddings)]
    if missing or unexpected:
        raise ConversionError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    torch_model.tie_weights()
    return torch_model.eval()
