"""A LoRA run's adapters as a `peft` adapter directory (adapter_config.json +
adapter_model.safetensors) that `PeftModel.from_pretrained` loads onto the HF base.

Our projection names map to HF module names through the converter's tensor table
(`hf_weights.tensor_maps`): `blocks/wq` is `model.layers.{i}.self_attn.q_proj.weight`, so the
adapter of layer i is `base_model.model.model.layers.{i}.self_attn.q_proj.lora_{A,B}.weight`
with A [rank, in] and B [out, rank] (peft's Linear layout; ours are [in..., rank] and
[rank, out...]). Only HF Linear projections one-to-one with ours can be written: GPT-2 packs
q, k, v in one Conv1D (`c_attn`), so its runs export with --merge_lora instead.
"""

from __future__ import annotations

import json
import os

import numpy as np

from easylm_imitate.convert.hf_config import ConversionError
from easylm_imitate.convert.hf_weights import tensor_maps
from easylm_imitate.convert.output_dir import check_out, staged_output

PREFIX = "base_model.model."


def peft_tensors(cfg, spec, adapters) -> tuple[dict[str, np.ndarray], list[str]]:
    """({peft tensor name: float32 array}, sorted HF target module names) of the adapters."""
    maps = {m.ours: m for m in tensor_maps(cfg)}
    tensors, modules = {}, set()
    for p in spec.targets:
        m = maps.get((p.key,))
        if m is None or not m.transpose or not m.layered or not m.hf.endswith(".weight"):
            raise ConversionError(f"--peft: projection {p.key} has no one-to-one HF Linear module in a {cfg.arch} "
                                  "model (GPT-2 packs q, k, v in c_attn); export with --merge_lora instead")
        a, b = (np.asarray(adapters[p.path[0]][p.path[1]][n], np.float32) for n in ("lora_a", "lora_b"))
        for i in range(cfg.num_layers):
            module = m.hf.format(i=i)[:-len(".weight")]
            tensors[f"{PREFIX}{module}.lora_A.weight"] = np.ascontiguousarray(a[i].reshape(-1, spec.rank).T)
            tensors[f"{PREFIX}{module}.lora_B.weight"] = np.ascontiguousarray(b[i].reshape(spec.rank, -1).T)
        modules.add(m.hf.split(".")[-2])
    return tensors, sorted(modules)


def adapter_config(spec, modules: list[str], base_path: str) -> dict:
    """adapter_config.json contents for a plain LoRA (no rsLoRA, DoRA or bias)."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_path,
            "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout, "target_modules": modules,
            "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "use_rslora": False,
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
            json.dump(adapter_config(spec, modules, meta["lora"]["base"]), f, indent=2)
    return out
