"""Building the sharded train state: model config, shardings, fresh / fine-tune / resumed state."""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from easylm_imitate import checkpoint, parallel
from easylm_imitate.models import ModelConfig, build_model, get_preset
from easylm_imitate.train import optim, run_checkpoint
from easylm_imitate.train.step import TrainState, train_step


def model_config(config) -> ModelConfig:
    """The model to train: from `init_from`'s metadata if given, else the preset; runtime
    fields (dtype, remat, attention) always come from the training config."""
    runtime = dict(dtype=config.model.dtype, remat=config.model.remat, attention=config.model.attention)
    if config.init_from:
        path = config.init_from
        if run_checkpoint.is_run_dir(path):
            _, meta = run_checkpoint.read_run_meta(path)
            base = ModelConfig.from_dict(meta["model"])
        else:
            base = ModelConfig.from_dict(checkpoint.read_meta(path)["model"])
        return base.replace(**runtime)
    return get_preset(config.model.preset, **runtime)


@dataclasses.dataclass
class StateLayout:
    """Abstract shapes and shardings of the train state on a mesh."""

    graphdef: nnx.GraphDef
    params_shapes: dict
    params_shardings: dict
    opt_shardings: object
    state_shardings: TrainState
    logical_axes: dict
    rules: parallel.ShardingRules  # what the graphdef's model constrains its layers with


def logical_axes(cfg: ModelConfig) -> dict:
    """Pure dict of each parameter's logical axis names."""
    return _axes_tree(nnx.state(nnx.eval_shape(lambda: build_model(cfg))))


def build_optimizer(config, cfg: ModelConfig, total_steps: int):
    """(optimizer, schedule) for a training config; weight decay only on matrices."""
    return optim.make_optimizer(config.optimizer, total_steps, optim.decay_mask(logical_axes(cfg)))


def jit_train_step(lay: "StateLayout", optimizer, schedule, accum: int, mesh: Mesh, rules_name: str,
                   skip_nonfinite: bool = False):
    """The sharded, donated, jitted train step for this layout (`skip_nonfinite`: a step with a
    NaN/inf loss or gradient norm keeps the previous state; see `step.train_step`).

    `rules_name` must be the rules the layout was made with; the layout's graphdef already
    carries them (see `layout`), so the model pins its own per-layer weights and activations,
    as it does in the eval step, sampler and scorer."""
    batch_shardings = parallel.batch_sharding(mesh)  # every batch array, whatever keys it has (see train/distill.py)
    _check_layout_rules(lay, mesh, rules_name)
    fn = functools.partial(train_step, lay.graphdef, optimizer, schedule, accum, skip_nonfinite=skip_nonfinite)
    return jax.jit(fn, in_shardings=(lay.state_shardings, batch_shardings),
                   out_shardings=(lay.state_shardings, parallel.replicated(mesh)), donate_argnums=0)


def _check_layout_rules(lay: "StateLayout", mesh: Mesh, rules_name: str) -> None:
    """Raise ValueError unless `lay` was made for `rules_name` on `mesh`."""
    want = parallel.ShardingRules.create(mesh, rules_name)
    if lay.rules != want:
        raise ValueError(f"train step for rules {rules_name!r} on mesh {dict(mesh.shape)}, but the layout was made "
                         f"for {lay.rules}")


def layout(cfg: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh, rules: str) -> StateLayout:
    """Shapes and shardings of params, optimizer state and step, without allocating. The
    graphdef carries `rules` on `mesh` (`parallel.attach_rules`), so every step built from
    it (train, eval) constrains the model's layers the same way."""
    sharding_rules = parallel.ShardingRules.create(mesh, rules)
    abstract = parallel.attach_rules(nnx.eval_shape(lambda: build_model(cfg)), mesh, rules)
    graphdef, abstract_state = nnx.split(abstract)
    params_shardings = parallel.state_shardings(abstract_state, mesh, rules).to_pure_dict()
    params_shapes = abstract_state.to_pure_dict()
    axes = _axes_tree(abstract_state)
    opt_shapes = jax.eval_shape(optimizer.init, params_shapes)
    rep = parallel.replicated(mesh)
    # Moments shaped like their parameter share its sharding; anything else (counts, the
    # placeholder rows/columns of a non-factored Adafactor) is replicated.
    opt_shardings = optax.tree_map_params(
        optimizer, lambda leaf, s, p: s if leaf.shape == p.shape else rep, opt_shapes, params_shardings,
        params_shapes, transform_non_params=lambda _: rep)
    state_shardings = TrainState(params_shardings, opt_shardings, rep)
    return StateLayout(graphdef, params_shapes, params_shardings, opt_shardings, state_shardings, axes,
                       sharding_rules)


def _axes_tree(abstract_state) -> dict:
    """Pure dict of each parameter's logical axis names."""
    flat = {path: tuple(getattr(var, "logical_axes", ()) or ()) for path, var in nnx.to_flat_state(abstract_state)}
    tree: dict = {}
    for path, axes in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = axes
    return tree


def fresh_params(cfg: ModelConfig, seed: int, lay: StateLayout):
    """Randomly initialised parameters, created directly in their shardings."""
    init = jax.jit(lambda: nnx.state(build_model(cfg, seed)).to_pure_dict(), out_shardings=lay.params_shardings)
    return init()


def params_from(path: str, lay: StateLayout):
    """Parameters of a converted checkpoint or of a training run's latest step (a LoRA run's
    base with its adapters merged in), sharded."""
    target = checkpoint.abstract_params(lay.params_shapes, lay.params_shardings)
    if run_checkpoint.is_run_dir(path):
        step, meta = run_checkpoint.read_run_meta(path)
        if isinstance(meta.get("lora"), dict):
            from easylm_imitate.lora.load import merged_run_params

            merged = merged_run_params(path, step)[1]
            return jax.tree.map(lambda a, s: jax.device_put(a, s), merged, lay.params_shardings)
        return run_checkpoint.restore_params_only(path, step, target)
    if not os.path.isdir(path):
        raise checkpoint.CheckpointError(f"init_from: {path}: no such checkpoint directory")
    return checkpoint.restore_params(path, target)


def initial_state(params, optimizer, lay: StateLayout) -> TrainState:
    """Step-0 train state around `params` (optimizer state created sharded)."""
    opt_state = jax.jit(optimizer.init, out_shardings=lay.opt_shardings)(params)
    step = jax.device_put(jax.numpy.zeros((), jax.numpy.int32), lay.state_shardings.step)
    return TrainState(params, opt_state, step)
