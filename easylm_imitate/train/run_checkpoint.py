"""Training-run checkpoints: an Orbax CheckpointManager with four items per step.

- `params`: float32 model parameters (pure dict, stacked-layer layout)
- `opt_state`: optimizer state
- `data`: the data iterator position (`{"next_index": k}`, k = the step: one batch per step)
- `meta`: step, tokens seen, the model config, the resolved training config, the training
  data's fingerprint and `integrity`: a checksum of every leaf of `params` and `opt_state`
  (see `train.integrity`), compared when the step is restored

Parameters and optimizer state are separate items so that `easylm_imitate.load(WORKDIR)`
and HF export read only the parameters. Saves are asynchronous; a step directory becomes
visible only when complete, so a kill during a save leaves the previous one intact. A save
refuses non-finite state, a failed save is reported (with the step directory and the cause)
at the next step, and rotation never removes the newest step known to be good.
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as policies

from easylm_imitate.checkpoint import CheckpointError, abstract_params
from easylm_imitate.models import ModelConfig
from easylm_imitate.train import integrity

ITEMS = ("params", "opt_state", "data", "meta")


def checkpoint_dir(workdir: str) -> str:
    """Where a run keeps its step directories."""
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def is_run_dir(path: str) -> bool:
    """Whether `path` looks like a training run directory."""
    return os.path.isdir(checkpoint_dir(path))


def cause_of(exc: BaseException) -> str:
    """One line saying why an operation failed: our own errors' message; else the OS error
    when there is one (also when tensorstore only quotes its code); else the type and first
    line of the innermost exception of the chain (the one that names the file)."""
    if isinstance(exc, (CheckpointError, integrity.IntegrityError)):
        return (str(exc).strip().splitlines() or [""])[0]
    chain: list[BaseException] = []
    while exc is not None and len(chain) < 20:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for e in chain:
        if isinstance(e, OSError) and e.errno:
            return os.strerror(e.errno) + (f": {e.filename}" if e.filename else "")
        code = re.search(r"os_error_code='?(\d+)", str(e))
        if code:
            return os.strerror(int(code.group(1)))
    root = chain[-1]
    first = (str(root).strip().splitlines() or [""])[0][:400]
    return f"{type(root).__name__}: {first}"


@dataclasses.dataclass
class _KeepGood:
    """Preservation policy: never rotate away the newest step known to be good (restored and
    verified, or saved from finite state and finished without error)."""

    good: int | None = None

    def should_preserve(self, checkpoints, *, context) -> list[bool]:
        return [info.step == self.good for info in checkpoints]


class RunCheckpointManager(ocp.CheckpointManager):
    """The run's CheckpointManager: save failures name the step directory and the cause, and
    `check_saved()` reports a failed asynchronous save at the next step."""

    def __init__(self, directory: str, options: ocp.CheckpointManagerOptions, keep_good: _KeepGood):
        self._keep_good = keep_good
        self._pending: int | None = None
        self._last_started: int | None = None
        super().__init__(directory, options=options, item_names=ITEMS)

    def step_path(self, step: int) -> str:
        """The directory of `step`."""
        return os.path.join(os.fspath(self.directory), str(step))

    def reached_preemption(self, step: int) -> bool:
        """Always False: the trainer agrees on preemption stops itself (`train.preemption`).
        Orbax would otherwise query JAX's preemption sync point with training steps on every
        save and move the loop-iteration counter the trainer's agreement relies on."""
        return False

    def mark_good(self, step: int) -> None:
        """Protect `step` from rotation until a newer step is known good."""
        self._keep_good.good = step

    def save(self, step: int, *args, **kwargs) -> bool:
        """CheckpointManager.save; CheckpointError naming the directory when it fails."""
        try:
            started = super().save(step, *args, **kwargs)
        except CheckpointError:
            raise
        except Exception as e:  # any failure to write: say where and why
            raise self._save_failed(e, step) from e
        if started:
            self._pending = self._last_started = step
        return started

    def wait_until_finished(self) -> None:
        """Wait for the pending save; CheckpointError naming its directory when it failed,
        whichever of Orbax's threads holds the error (the finalizer or the async writer)."""
        pending, self._pending = self._pending, None
        try:
            super().wait_until_finished()
            self.check_for_errors()  # an error the finalizer did not see is raised here, once
        except Exception as e:
            raise self._save_failed(e, pending) from e
        if pending is not None:
            self.mark_good(pending)

    def check_saved(self) -> None:
        """Raise now if the last asynchronous save has finished and failed (cheap; call each step)."""
        if self._pending is not None and not self.is_saving_in_progress():
            self.wait_until_finished()

    def close(self, quiet: bool = False) -> None:
        """Wait for the last save and release Orbax's threads; CheckpointError naming the step
        directory when that save failed. `quiet`: report nothing (an error already on its way
        says what went wrong, and cleanup must not replace it)."""
        try:
            super().close()
        except CheckpointError:
            if not quiet:
                raise
        except Exception as e:
            if not quiet:
                raise self._save_failed(e, None) from e

    def _save_failed(self, exc: BaseException, step: int | None) -> CheckpointError:
        step = self._last_started if step is None else step
        where = self.step_path(step) if step is not None else os.fspath(self.directory)
        return CheckpointError(f"checkpoint save failed: {cause_of(exc)}: {where}")


def manager(workdir: str, save_every_steps: int = 1, keep: int | None = None,
            read_only: bool = False) -> RunCheckpointManager:
    """The run's CheckpointManager (async saves, keep-last-`keep` plus the newest good step)."""
    interval = 0 if read_only else max(save_every_steps, 1)
    keep_good = _KeepGood()
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=interval, enable_async_checkpointing=not read_only, read_only=read_only,
        create=not read_only, cleanup_tmp_directories=not read_only,
        preservation_policy=policies.AnyPreservationPolicy([policies.LatestN(n=keep), keep_good]))
    return RunCheckpointManager(checkpoint_dir(workdir), options, keep_good)


def save(mgr: ocp.CheckpointManager, step: int, params, opt_state, data_state: dict, meta: dict,
         force: bool = False) -> bool:
    """Start an asynchronous save of all four items; returns whether a save was started.

    The meta item gets the checksums of `params` and `opt_state`; NonFiniteError (nothing
    written) when either holds NaN or inf."""
    if not force and not mgr.should_save(step):
        return False
    digests = integrity.state_digests({"params": params, "opt_state": opt_state})
    args = ocp.args.Composite(params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
                              data=ocp.args.JsonSave(data_state),
                              meta=ocp.args.JsonSave({**meta, "integrity": digests}))
    return mgr.save(step, args=args, force=force)


def restore(mgr: ocp.CheckpointManager, step: int, params_target, opt_state_target) -> dict:
    """Restore every item of `step` onto the given abstract (sharded) targets, `meta` first;
    CheckpointError naming the item's directory and the cause when one cannot be read."""
    wanted = {"meta": ocp.args.JsonRestore(), "data": ocp.args.JsonRestore(),
              "params": ocp.args.StandardRestore(params_target),
              "opt_state": ocp.args.StandardRestore(opt_state_target)}
    restored = {}
    for name, arg in wanted.items():
        try:
            restored[name] = mgr.restore(step, args=ocp.args.Composite(**{name: arg}))[name]
        except Exception as e:  # whatever the reader raises, say which item of which step
            raise CheckpointError(f"{os.path.join(os.fspath(mgr.directory), str(step), name)}: {cause_of(e)}") from e
    return restored


def read_run_meta(workdir: str, step: int | None = None) -> tuple[int, dict]:
    """(step, meta item) of the latest (or given) checkpoint of a run."""
    with manager(workdir, read_only=True) as mgr:
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{workdir}: training run has no checkpoint yet")
        try:
            meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:
            raise CheckpointError(f"{mgr.step_path(step)}/meta: cannot read: {cause_of(e)}") from e
    return step, meta


def restore_params_only(workdir: str, step: int, target) -> dict:
    """The `params` item of a run's checkpoint, restored onto `target` and verified against
    the checksums saved with it."""
    _, meta = read_run_meta(workdir, step)
    with manager(workdir, read_only=True) as mgr:
        where = f"{mgr.step_path(step)}/params"
        try:
            params = mgr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))["params"]
            integrity.verify_digests({"params": params}, meta.get("integrity"))
        except Exception as e:
            raise CheckpointError(f"{where}: unusable checkpoint: {cause_of(e)}") from e
    return params


def load_latest(workdir: str, mesh=None, rules: str = "fsdp_tp", step: int | None = None, **config_overrides):
    """(model, tokenizer) from the latest checkpoint of a training run."""
    from easylm_imitate.api import load_tokenizer, model_from_params

    step, meta = read_run_meta(workdir, step)
    if isinstance(meta.get("lora"), dict):  # a LoRA run: its params are adapters; merge them into the base
        from easylm_imitate.lora.load import load_merged

        return load_merged(workdir, step, mesh, rules, **config_overrides)
    cfg = ModelConfig.from_dict(meta["model"]).replace(**config_overrides)
    model = model_from_params(cfg, lambda target: restore_params_only(workdir, step, target), mesh, rules)
    return model, load_tokenizer(workdir)


def abstract_like(tree, shardings):
    """Abstract restore target with the shapes/dtypes of `tree` and the given shardings."""
    return abstract_params(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree), shardings)
