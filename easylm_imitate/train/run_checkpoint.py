"""Training-run checkpoints: an Orbax CheckpointManager with four items per step.

- `params`: float32 model parameters (pure dict, stacked-layer layout)
- `opt_state`: optimizer state
- `data`: the data iterator position (`{"next_index": k}`)
- `meta`: step, tokens seen, the model config and the resolved training config

Parameters and optimizer state are separate items so that `easylm_imitate.load(WORKDIR)`
and HF export read only the parameters. Saves are asynchronous; a step directory becomes
visible only when complete, so a kill during a save leaves the previous one intact.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from easylm_imitate.checkpoint import CheckpointError, abstract_params
from easylm_imitate.models import ModelConfig

ITEMS = ("params", "opt_state", "data", "meta")


def checkpoint_dir(workdir: str) -> str:
    """Where a run keeps its step directories."""
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def is_run_dir(path: str) -> bool:
    """Whether `path` looks like a training run directory."""
    return os.path.isdir(checkpoint_dir(path))


def manager(workdir: str, save_every_steps: int = 1, keep: int | None = None,
            read_only: bool = False) -> ocp.CheckpointManager:
    """The run's CheckpointManager (async saves, keep-last-`keep`)."""
    interval = 0 if read_only else max(save_every_steps, 1)
    options = ocp.CheckpointManagerOptions(save_interval_steps=interval, max_to_keep=keep,
                                           enable_async_checkpointing=not read_only, read_only=read_only,
                                           create=not read_only)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


def save(mgr: ocp.CheckpointManager, step: int, params, opt_state, data_state: dict, meta: dict,
         force: bool = False) -> bool:
    """Start an asynchronous save of all four items; returns whether a save was started."""
    args = ocp.args.Composite(params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
                              data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta))
    return mgr.save(step, args=args, force=force)


def restore(mgr: ocp.CheckpointManager, step: int, params_target, opt_state_target) -> dict:
    """Restore every item of `step` onto the given abstract (sharded) targets."""
    args = ocp.args.Composite(params=ocp.args.StandardRestore(params_target),
                              opt_state=ocp.args.StandardRestore(opt_state_target),
                              data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore())
    return mgr.restore(step, args=args)


def read_run_meta(workdir: str, step: int | None = None) -> tuple[int, dict]:
    """(step, meta item) of the latest (or given) checkpoint of a run."""
    with manager(workdir, read_only=True) as mgr:
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{workdir}: training run has no checkpoint yet")
        meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    return step, meta


def restore_params_only(workdir: str, step: int, target) -> dict:
    """The `params` item of a run's checkpoint, restored onto `target`."""
    with manager(workdir, read_only=True) as mgr:
        return mgr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]


def load_latest(workdir: str, mesh=None, rules: str = "fsdp_tp", step: int | None = None, **config_overrides):
    """(model, tokenizer) from the latest checkpoint of a training run."""
    from easylm_imitate.api import load_tokenizer, model_from_params

    step, meta = read_run_meta(workdir, step)
    cfg = ModelConfig.from_dict(meta["model"]).replace(**config_overrides)
    model = model_from_params(cfg, lambda target: restore_params_only(workdir, step, target), mesh, rules)
    return model, load_tokenizer(workdir)


def abstract_like(tree, shardings):
    """Abstract restore target with the shapes/dtypes of `tree` and the given shardings."""
    return abstract_params(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree), shardings)
