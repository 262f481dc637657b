"""A LoRA run's adapters as a `peft` adapter directory (adapter_config.json +
adapter_model.safetensors) that `PeftModel.from_pretrained` loads onto the HF base.

Our projection names map to HF module names through the converter's tensor table
(`hf_weights.tensor_maps`): `blocks/wq` is `model.layers.{i}.self_attn.q_proj.weight`, so the
adapter of layer i is `base_model.model.model.layers.{i}.self_attn.q_proj.lora_{A,B}.weight`
with A [rank, in] and B [out, rank] (peft's layout, also for GPT-2's Conv1D modules, where
`fan_in_fan_out` is set; ours are [in..., rank] and [rank, out...]). GPT-2 packs q, k, v in
one `c_attn`: see `peft_tensors`.
"""

from __future__ import annotations

import json
import os

import numpy as np

from easylm_imitate.convert.hf_config import ConversionError
from easylm_imitate.convert.hf_weights import tensor_maps
from easylm_imitate.convert.output_dir import check_out, staged_output

PREFIX = "base_model.model."


def _module_name(hf: str) -> str:
    """`model.layers.{i}.self_attn.q_proj.weight` -> `self_attn.q_proj` (what target_modules lists)."""
    return ".".join(hf.split(".")[-3:-1])


def peft_tensors(cfg, spec, adapters) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """({peft tensor name: float32 array}, {HF target module: its rank}) of the adapters.

    A HF module that packs several of our projections (GPT-2's `c_attn` = q, k, v) gets one
    adapter of rank `rank x parts`: A stacks the parts' A matrices, B is block-diagonal, so its
    update is exactly theirs side by side (a part without an adapter contributes zeros)."""
    by_path = {p.key: p for p in spec.targets}
    tensors, modules = {}, {}
    for m in tensor_maps(cfg):
        parts = [by_path.get(path) for path in m.ours]
        if not m.layered or not any(parts):
            continue
        if not m.hf.endswith(".weight"):
            raise ConversionError(f"--peft: {m.hf} is not a weight matrix")
        r, n = spec.rank, len(parts)
        first = next(p for p in parts if p)
        fan_in, out = first.fan_in, int(np.prod(first.shape[first.lead + first.in_dims:]))
        for i in range(cfg.num_layers):
            big_a = np.zeros((r * n, fan_in), np.float32)
            big_b = np.zeros((out * n, r * n), np.float32)
            for j, proj in enumerate(parts):
                if proj is None:  # a packed part without an adapter: zeros
                    continue
                node = adapters[proj.path[0]][proj.path[1]]
                big_a[j * r:(j + 1) * r] = np.asarray(node["lora_a"][i], np.float32).reshape(fan_in, r).T
                big_b[j * out:(j + 1) * out, j * r:(j + 1) * r] = np.asarray(node["lora_b"][i], np.float32).reshape(r, out).T
            module = m.hf.format(i=i)[:-len(".weight")]
            tensors[f"{PREFIX}{module}.lora_A.weight"] = big_a
            tensors[f"{PREFIX}{module}.lora_B.weight"] = big_b
        modules[_module_name(m.hf)] = r * n
    return tensors, modules


def adapter_config(spec, modules: dict[str, int], base_path: str, fan_in_fan_out: bool) -> dict:
    """adapter_config.json contents for a plain LoRA (no rsLoRA, DoRA or bias). Modules of a
    larger rank (packed projections) keep the scale alpha / rank through rank_pattern and
    alpha_pattern."""
    wider = {name: rank for name, rank in modules.items() if rank != spec.rank}
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_path,
            "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout,
            "target_modules": sorted(modules), "rank_pattern": wider,
            "alpha_pattern": {name: spec.alpha * rank / spec.rank for name, rank in wider.items()},
            "bias": "none", "fan_in_fan_out": fan_in_fan_out, "inference_mode": True, "use_rslora": False,
            "use_dora": False, "init_lora_weights": True, "modules_to_save": None}


def export_peft(run_dir: str | os.PathLike, out: str | os.PathLike) -> str:
    """Write a LoRA run's latest adapters to `out` (atomically) as a peft adapter directory."""
    import safetensors.numpy

    from easylm_imitate.lora.load import read_run

    run_dir, out = os.path.abspath(os.fspath(run_dir)), os.path.abspath(os.fspath(out))
    check_out(out)
    _, meta, cfg, spec, _, adapters = read_run(run_dir)
    tensors, modules = peft_tensors(cfg, spec, adapters)
    with staged_output(out) as tmp:
        os.mkdir(tmp)
        safetensors.numpy.save_file(tensors, os.path.join(tmp, "adapter_model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "adapter_config.json"), "w", encoding="utf-8") as f:
            json.dump(adapter_config(spec, modules, meta["lora"]["base"], cfg.arch == "gpt2"), f, indent=2)
    return out
