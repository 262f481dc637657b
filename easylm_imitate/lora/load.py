"""Reading a LoRA run back: its adapters, its base (checked against the fingerprint saved
with the run) and the merged model that `easylm_imitate.load(run)` returns."""

from __future__ import annotations

import os
import re
import types

import jax
import ml_collections
import numpy as np

from easylm_imitate import checkpoint
from easylm_imitate.checkpoint import CheckpointError
from easylm_imitate.lora import adapters as adapters_lib
from easylm_imitate.models import ModelConfig


def is_lora_meta(meta: dict) -> bool:
    """Whether a run checkpoint's meta item belongs to a LoRA run."""
    return isinstance(meta, dict) and isinstance(meta.get("lora"), dict)


def is_lora_run(path: str | os.PathLike) -> bool:
    """Whether `path` is a training run whose latest checkpoint is a LoRA run's."""
    from easylm_imitate.train import run_checkpoint

    path = os.fspath(path)
    if not run_checkpoint.is_run_dir(path):
        return False
    try:
        return is_lora_meta(run_checkpoint.read_run_meta(path)[1])
    except CheckpointError:
        return False


def spec_from_meta(cfg: ModelConfig, meta: dict) -> adapters_lib.LoraSpec:
    """The LoraSpec a run was trained with (its targets by parameter path)."""
    from easylm_imitate.lora.run import projections

    saved = meta["lora"]
    lora_cfg = ml_collections.ConfigDict(dict(
        rank=saved["rank"], alpha=saved["alpha"], dropout=saved.get("dropout", 0.0), init=saved.get("init", "gaussian"),
        base_dtype=saved.get("base_dtype", "float32"), targets="|".join(re.escape(k) for k in saved["targets"])))
    return adapters_lib.make_spec(lora_cfg, projections(cfg))


def _single_device_layout(shapes):
    return types.SimpleNamespace(params_shapes=shapes, params_shardings=checkpoint.single_device_shardings(shapes))


def read_run(workdir: str, step: int | None = None):
    """(step, meta, cfg, spec, stored base, adapters) of a LoRA run's checkpoint, on one
    device; CheckpointError when the base is missing or no longer the one trained on."""
    from easylm_imitate.api import abstract_model
    from easylm_imitate.lora.run import base_fingerprint
    from easylm_imitate.train import run_checkpoint, state as state_lib

    step, meta = run_checkpoint.read_run_meta(workdir, step)
    if not is_lora_meta(meta):
        raise CheckpointError(f"{workdir}: not a LoRA run (its checkpoints hold full parameters)")
    cfg = ModelConfig.from_dict(meta["model"])
    spec = spec_from_meta(cfg, meta)
    base_path, want = meta["lora"]["base"], meta["lora"]["base_fingerprint"]
    _, abstract = abstract_model(cfg)
    try:
        float_base = state_lib.params_from(base_path, _single_device_layout(abstract.to_pure_dict()))
    except CheckpointError as e:
        raise CheckpointError(f"{workdir}: LoRA base {base_path} cannot be read: {e}") from e
    got = base_fingerprint(float_base)
    if got != want:
        raise CheckpointError(f"{workdir}: LoRA base {base_path} has changed since the run (fingerprint {got}, "
                              f"trained on {want})")
    shapes = adapters_lib.adapter_shapes(spec)
    target = checkpoint.abstract_params(shapes, checkpoint.single_device_shardings(shapes))
    adapters = run_checkpoint.restore_params_only(workdir, step, target)
    return step, meta, cfg, spec, adapters_lib.store_base(float_base, spec), adapters


def merged_run_params(workdir: str, step: int | None = None) -> tuple[ModelConfig, dict, dict]:
    """(cfg, merged float32 parameters as numpy, meta) of a LoRA run: the (dequantised) base
    plus scale * A @ B on every targeted projection."""
    _, meta, cfg, spec, base, adapters = read_run(workdir, step)
    merged = jax.jit(lambda b, a: adapters_lib.merged_params(b, a, spec))(base, adapters)
    return cfg, jax.tree.map(np.asarray, merged), meta


def load_merged(workdir: str, step: int | None = None, mesh=None, rules: str = "fsdp_tp", **config_overrides):
    """(model, tokenizer) of a LoRA run with its adapters merged into the base."""
    from easylm_imitate.api import load_tokenizer, model_from_params

    cfg, merged, _ = merged_run_params(workdir, step)
    cfg = cfg.replace(**config_overrides)

    def place(target):
        return jax.tree.map(lambda t, a: jax.device_put(a, t.sharding), target, merged)

    return model_from_params(cfg, place, mesh, rules), load_tokenizer(workdir)
