"""A LoRA training run: the frozen base read from `init_from` (fingerprinted, stored as
`lora.base_dtype` says), the adapters' layout, optimizer and jitted steps.

The run's checkpoints hold the adapters as `params` (with their optimizer state) and, in the
`meta` item, `lora`: the spec, the base checkpoint's path and its fingerprint. So resume,
rotation and integrity checks are the ordinary ones, and a changed base is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import optax
from flax import nnx
from jax.sharding import NamedSharding

from easylm_imitate import parallel
from easylm_imitate.checkpoint import CheckpointError
from easylm_imitate.lora import adapters as adapters_lib
from easylm_imitate.lora import quant
from easylm_imitate.lora import step as lora_step
from easylm_imitate.lora.adapters import LoraConfigError, LoraSpec
from easylm_imitate.models import ModelConfig, build_model
from easylm_imitate.train import integrity, optim, run_checkpoint
from easylm_imitate.train import state as state_lib
from easylm_imitate.train.step import TrainState


def base_fingerprint(params) -> str:
    """sha256 (16 hex) of the per-leaf checksums of the base parameters (`train.integrity`)."""
    checksums, _ = integrity.tree_digest(params)
    return hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()[:16]


def projections(cfg: ModelConfig) -> list[adapters_lib.Projection]:
    """The projections of a model of this config (from its abstract parameter state)."""
    return adapters_lib.find_projections(nnx.state(nnx.eval_shape(lambda: build_model(cfg))))


def _path_keys(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", k)) for k in path)


def base_shardings(stored_abstract, float_shardings, mesh, rules: str):
    """Shardings of the stored base: each float leaf as the model's parameter, the codes and
    scales of a quantised one by the parameter's logical axes."""
    table = parallel.rules_for(rules)

    def one(path, leaf):
        if quant.is_quantized(leaf):
            codes_axes, scales_axes = leaf.part_axes()
            return leaf.replace(
                codes=NamedSharding(mesh, parallel.logical_to_spec(codes_axes, table, leaf.codes.shape, mesh)),
                scales=NamedSharding(mesh, parallel.logical_to_spec(scales_axes, table, leaf.scales.shape, mesh)))
        node = float_shardings
        for key in _path_keys(path):
            node = node[key]
        return node

    return jax.tree_util.tree_map_with_path(one, stored_abstract, is_leaf=quant.is_quantized)


def adapter_layout(base_lay, spec: LoraSpec, optimizer, mesh, rules: str):
    """The StateLayout of a LoRA run: the model's graphdef, the adapters as `params`."""
    table = parallel.rules_for(rules)
    shapes = adapters_lib.adapter_shapes(spec)
    axes = adapters_lib.adapter_axes(spec)
    shardings = jax.tree.map(lambda s, a: NamedSharding(mesh, parallel.logical_to_spec(a, table, s.shape, mesh)),
                             shapes, axes, is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct))
    opt_shapes = jax.eval_shape(optimizer.init, shapes)
    rep = parallel.replicated(mesh)
    # As state.layout: moments shaped like their adapter share its sharding, the rest is replicated.
    opt_shardings = optax.tree_map_params(
        optimizer, lambda leaf, s, p: s if leaf.shape == p.shape else rep, opt_shapes, shardings, shapes,
        transform_non_params=lambda _: rep)
    return dataclasses.replace(base_lay, params_shapes=shapes, params_shardings=shardings,
                               opt_shardings=opt_shardings,
                               state_shardings=TrainState(shardings, opt_shardings, rep), logical_axes=axes)


@dataclasses.dataclass
class LoraRun:
    """Everything the trainer needs for a LoRA run (see `setup`)."""

    spec: LoraSpec
    lay: object  # state.StateLayout of the adapters
    base: dict  # the stored (possibly quantised) base, sharded
    base_shardings: dict
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    base_path: str
    fingerprint: str
    seed: int  # of the adapters' dropout masks (config.seed)
    mesh: object

    def init_params(self, seed: int) -> dict:
        """Fresh adapters, created in their shardings."""
        return jax.jit(lambda: adapters_lib.init_adapters(self.spec, seed), out_shardings=self.lay.params_shardings)()

    def train_step_fn(self, accum: int, skip_nonfinite: bool):
        """`(state, batch) -> (state, metrics)` over the frozen base."""
        jitted = lora_step.jit_train_step(self.lay, self.base_shardings, self.optimizer, self.schedule, accum,
                                          self.spec, self.seed, self.mesh, skip_nonfinite)
        return lambda state, batch: jitted(state, self.base, batch)

    def eval_fn(self):
        """`(adapters, batch) -> sums` over the frozen base."""
        jitted = lora_step.jit_eval_step(self.lay, self.base_shardings, self.spec, self.mesh)
        return lambda adapters, batch: jitted(adapters, self.base, batch)

    def meta(self) -> dict:
        """The `lora` entry of each checkpoint's meta item."""
        return {"lora": {**self.spec.to_dict(), "base": self.base_path, "base_fingerprint": self.fingerprint}}


def _check_run_base(workdir: str, fingerprint: str, base_path: str) -> None:
    """CheckpointError when the run's saved steps were trained on another base."""
    if not run_checkpoint.is_run_dir(workdir):
        return
    try:
        _, meta = run_checkpoint.read_run_meta(workdir)
    except CheckpointError:
        return  # no step yet (or unreadable: resume reports it)
    saved = (meta.get("lora") or {}).get("base_fingerprint")
    if saved is None:
        raise CheckpointError(f"{workdir}: this run's checkpoints are full fine-tuning, not LoRA (lora.rank > 0); "
                              "use a new --workdir")
    if saved != fingerprint:
        raise CheckpointError(f"{base_path}: the base differs from the one this LoRA run was trained on "
                              f"(fingerprint {fingerprint}, run {saved}); resume with the original init_from")


@dataclasses.dataclass
class LoraPlan:
    """The shapes and shardings of a LoRA run, known before any weight is read."""

    spec: LoraSpec
    base_lay: object  # state.StateLayout of the full model (the base's float layout)
    stored_abstract: dict  # ShapeDtypeStructs of the stored (possibly quantised) base
    base_shardings: dict
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    lay: object  # state.StateLayout of the adapters


def plan(config, cfg: ModelConfig, total_steps: int, mesh) -> LoraPlan:
    """Spec, layouts, stored-base shapes and optimizer (weight decay on every adapter) of a
    LoRA run of `cfg` on `mesh`; LoraConfigError naming a bad `config.lora` field."""
    spec = adapters_lib.make_spec(config.lora, projections(cfg))
    base_lay = state_lib.layout(cfg, optax.identity(), mesh, config.sharding_rules)
    stored_abstract = jax.eval_shape(lambda p: adapters_lib.store_base(p, spec), base_lay.params_shapes)
    shardings = base_shardings(stored_abstract, base_lay.params_shardings, mesh, config.sharding_rules)
    axes = adapters_lib.adapter_axes(spec)
    mask = jax.tree.map(lambda _: True, axes, is_leaf=lambda x: isinstance(x, tuple))
    optimizer, schedule = optim.make_optimizer(config.optimizer, total_steps, mask)
    lay = adapter_layout(base_lay, spec, optimizer, mesh, config.sharding_rules)
    return LoraPlan(spec, base_lay, stored_abstract, shardings, optimizer, schedule, lay)


def setup(config, cfg: ModelConfig, total_steps: int, mesh, workdir: str, log=print) -> LoraRun:
    """Read and store the base, check it against the run's checkpoints, build the layout,
    optimizer and steps of a LoRA run (see `plan`)."""
    if not config.init_from:
        raise LoraConfigError("lora.rank > 0 needs init_from: the base checkpoint (or run) whose weights stay frozen")
    p = plan(config, cfg, total_steps, mesh)
    float_params = state_lib.params_from(config.init_from, p.base_lay)
    base_path = os.path.abspath(config.init_from)
    fingerprint = base_fingerprint(float_params)
    _check_run_base(workdir, fingerprint, base_path)
    base = jax.jit(lambda w: adapters_lib.store_base(w, p.spec), out_shardings=p.base_shardings)(float_params)
    del float_params
    spec = p.spec
    n_adapter = sum(s.size for s in jax.tree.leaves(p.lay.params_shapes))
    log(f"lora: rank {spec.rank}, alpha {spec.alpha} on {len(spec.targets)} projections "
        f"({', '.join(sorted({t.name for t in spec.targets}))}): {n_adapter / 1e6:.3f}M trainable parameters; "
        f"base {base_path} (fingerprint {fingerprint}) stored as {spec.base_dtype}")
    return LoraRun(spec, p.lay, base, p.base_shardings, p.optimizer, p.schedule, base_path, fingerprint,
                   config.seed, mesh)
