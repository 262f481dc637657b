"""Device meshes, logical-axis sharding rules, multi-host initialisation and batch assembly.

A mesh has three named axes: `dp` (pure data parallel: parameters replicated), `fsdp`
(data parallel with parameters and optimizer state sharded) and `tp` (tensor parallel).
Parameters carry logical axis names (`vocab`, `embed`, `heads`, `kv_heads`, `head_dim`,
`mlp`, `layers`, `norm`); a rules table maps each logical name to a mesh axis or None.
A model holds its rules (`ShardingRules`, recorded by `attach_rules`, which `shard_model` and
`create_sharded_model` call) and constrains its own activations and per-layer weights by them.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("dp", "fsdp", "tp")
BATCH_AXES = ("dp", "fsdp")

# Logical name -> mesh axis. FSDP shards the embedding dimension of every matrix; the
# tensor-parallel axis splits heads, MLP and vocabulary. With tp=1 the tp entries are no-ops.
RULES: dict[str, dict[str, str | None]] = {
    "fsdp": {"batch": ("dp", "fsdp"), "vocab": None, "embed": "fsdp", "heads": None, "kv_heads": None, "head_dim": None,
             "mlp": None, "layers": None, "norm": None},
    "fsdp_tp": {"batch": ("dp", "fsdp"), "vocab": "tp", "embed": "fsdp", "heads": "tp", "kv_heads": "tp", "head_dim": None,
                "mlp": "tp", "layers": None, "norm": None},
    "replicated": {},
}


def parse_mesh_spec(spec: str, num_devices: int | None = None) -> dict[str, int]:
    """Parse 'dp:1,fsdp:-1,tp:1' into axis sizes; one -1 takes the remaining devices."""
    num_devices = num_devices or jax.device_count()
    sizes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition(":")
        if not sep or name not in MESH_AXES:
            raise ValueError(f"mesh spec {spec!r}: bad entry {part!r} (expected AXIS:SIZE with AXIS in {MESH_AXES})")
        if name in sizes:
            raise ValueError(f"mesh spec {spec!r}: axis {name!r} given twice")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise ValueError(f"mesh spec {spec!r}: size of {name!r} is not an integer: {value!r}") from None
    for name in MESH_AXES:
        sizes.setdefault(name, 1)
    free = [n for n, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ValueError(f"mesh spec {spec!r}: only one axis may be -1")
    fixed = int(np.prod([s for s in sizes.values() if s != -1]))
    if any(s == 0 or s < -1 for s in sizes.values()):
        raise ValueError(f"mesh spec {spec!r}: sizes must be positive or -1")
    if free:
        if num_devices % fixed:
            raise ValueError(f"mesh spec {spec!r}: {num_devices} devices are not divisible by {fixed}")
        sizes[free[0]] = num_devices // fixed
    if int(np.prod(list(sizes.values()))) != num_devices:
        raise ValueError(f"mesh spec {spec!r} needs {int(np.prod(list(sizes.values())))} devices, "
                         f"but {num_devices} are available")
    return {n: sizes[n] for n in MESH_AXES}


def make_mesh(spec: str = "dp:1,fsdp:-1,tp:1", devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with axes (dp, fsdp, tp) over `devices` (default: all), classic GSPMD (Auto) axes."""
    devices = list(devices) if devices is not None else jax.devices()
    sizes = parse_mesh_spec(spec, len(devices))
    shape = tuple(sizes[n] for n in MESH_AXES)
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    if devices == jax.devices():
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def logical_to_spec(axes: Sequence[str | None], rules: Mapping, shape=None, mesh=None) -> PartitionSpec:
    """Map logical axis names to a PartitionSpec.

    A rule's value is a mesh axis, a tuple of mesh axes, or None. Each mesh axis is used at
    most once, and only on a dimension it divides evenly (otherwise that dimension stays
    whole: `unsplit_dimensions` names such dimensions).
    """
    return PartitionSpec(*_assign_mesh_axes(axes, rules, shape, mesh)[0])


def _assign_mesh_axes(axes, rules, shape, mesh):
    """(spec entries, [(dim, logical name, mesh axes, their size)] for each dimension a rule
    maps to mesh axes of size > 1 that do not divide it)."""
    used: set[str] = set()
    out, undivided = [], []
    for i, name in enumerate(axes):
        target = rules.get(name) if name is not None else None
        names = (target,) if isinstance(target, str) else tuple(target or ())
        size = int(np.prod([mesh.shape[n] for n in names])) if mesh is not None and names else 1
        divides = shape is None or mesh is None or shape[i] % size == 0
        if names and not used.intersection(names) and divides:
            used.update(names)
            out.append(target)
        else:
            out.append(None)
            if names and not divides:
                undivided.append((i, name, names, size))
    return out, undivided


def _unsplit_messages(param: str, axes, shape, rules, mesh) -> list[str]:
    """One line per dimension of parameter `param` left whole because its mesh axes do not divide it."""
    return [f"parameter {param}: dimension {i} ({name}, size {shape[i]}) is not split over mesh axis "
            f"{'x'.join(names)}, whose size {size} does not divide it"
            for i, name, names, size in _assign_mesh_axes(axes, rules, shape, mesh)[1]]


def unsplit_dimensions(shapes, logical_axes, mesh: Mesh, rules: str | Mapping[str, str | None]) -> list[str]:
    """Lines naming each parameter dimension that `rules` shard but `mesh` cannot split evenly
    (e.g. GPT-2's vocabulary of 50257 under tp=2), for trees of shapes and of logical axes
    with the same structure (pure dicts, as `train.state.layout` keeps them)."""
    table = rules_for(rules)
    axes_by_path = dict(jax.tree_util.tree_flatten_with_path(logical_axes, is_leaf=lambda x: isinstance(x, tuple))[0])
    lines = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        lines += _unsplit_messages(name, axes_by_path.get(path) or (), leaf.shape, table, mesh)
    return lines


def rules_for(name_or_rules: str | Mapping[str, str | None]) -> Mapping[str, str | None]:
    """A rules table by name ('fsdp', 'fsdp_tp', 'replicated') or passed through."""
    if isinstance(name_or_rules, str):
        if name_or_rules not in RULES:
            raise ValueError(f"unknown sharding rules {name_or_rules!r}; choose one of {sorted(RULES)}")
        return RULES[name_or_rules]
    return name_or_rules


@dataclasses.dataclass(frozen=True)
class ShardingRules:
    """A mesh and a logical-axis rules table, as a model holds them (a static, hashable part of
    its graph definition): every module constrains its activations and its per-layer weight
    slices with `constrain`, so whatever runs the model (train and eval steps, sampler,
    scorer, `easylm_imitate.load(mesh=...)`) partitions it the same way."""

    mesh: Mesh
    table: tuple[tuple[str, object], ...]

    @classmethod
    def create(cls, mesh: Mesh, rules: "str | Mapping[str, str | None]") -> "ShardingRules":
        """Rules by name ('fsdp', 'fsdp_tp', 'replicated') or table, on `mesh`."""
        return cls(mesh, tuple(sorted(rules_for(rules).items())))

    def spec(self, axes: Sequence[str | None], shape) -> PartitionSpec:
        """PartitionSpec of an array of `shape` with logical `axes` (see `logical_to_spec`)."""
        return logical_to_spec(axes, dict(self.table), shape, self.mesh)

    def constrain(self, x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
        """`x` constrained to the sharding its logical `axes` map to."""
        if len(axes) != x.ndim:
            raise ValueError(f"logical axes {tuple(axes)} do not match an array of shape {x.shape}")
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, self.spec(axes, x.shape)))


def constrain(x: jax.Array, axes: Sequence[str | None], rules: ShardingRules | None) -> jax.Array:
    """`rules.constrain(x, axes)`, or `x` unchanged when the model has no rules (one device)."""
    return x if rules is None else rules.constrain(x, axes)


def attach_rules(model, mesh: Mesh | None, rules: str | Mapping[str, str | None] = "fsdp_tp"):
    """Record the sharding rules on `model` and each of its submodules that has a
    `sharding_rules` attribute (None when `mesh` is None: no constraints). Returns `model`."""
    value = None if mesh is None else ShardingRules.create(mesh, rules)
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "sharding_rules"):
            module.sharding_rules = value
    return model


def state_shardings(state, mesh: Mesh, rules: str | Mapping[str, str | None] = "fsdp_tp"):
    """NamedShardings for an nnx.State (or any pytree of Variables) from `logical_axes` metadata.

    Logs a warning for each parameter dimension the rules would shard but the mesh cannot
    split evenly (that dimension stays whole on every device; see `unsplit_dimensions`)."""
    table = rules_for(rules)
    unsplit: list[str] = []

    def one(path, var):
        if isinstance(var, nnx.Variable):
            axes = getattr(var, "logical_axes", None)
            shape = getattr(var.get_value(), "shape", None)
            if axes is None:
                spec = PartitionSpec()
            else:
                spec = logical_to_spec(axes, table, shape, mesh)
                if shape is not None:
                    name = jax.tree_util.keystr(path, simple=True, separator="/")
                    unsplit.extend(_unsplit_messages(name, axes, shape, table, mesh))
            return var.replace(NamedSharding(mesh, spec))
        return NamedSharding(mesh, PartitionSpec())

    out = jax.tree_util.tree_map_with_path(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    for line in unsplit:
        logging.warning("%s (mesh %s)", line, dict(mesh.shape))
    return out


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a [batch, ...] array: batch split over dp and fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding on `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def create_sharded_model(build, mesh: Mesh, rules: str | Mapping[str, str | None] = "fsdp_tp"):
    """Build an nnx model directly into sharded device memory (no full host copy).

    `build` is a zero-argument function returning the model.
    """
    abstract = nnx.eval_shape(build)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = state_shardings(abstract_state, mesh, rules)

    @jax.jit
    def init():
        state = nnx.state(build())
        return jax.lax.with_sharding_constraint(state, shardings)

    with jax.set_mesh(mesh):
        state = jax.jit(init, out_shardings=shardings)()
    return attach_rules(nnx.merge(graphdef, state), mesh, rules)


def shard_model(model, mesh: Mesh, rules: str | Mapping[str, str | None] = "fsdp_tp"):
    """Move an existing model's parameters onto `mesh` according to `rules` (in place) and
    record the rules on the model, which then constrains its activations by them."""
    state = nnx.state(model)
    shardings = state_shardings(state, mesh, rules)
    nnx.update(model, jax.device_put(state, shardings))
    return attach_rules(model, mesh, rules)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, local_device_ids=None) -> bool:
    """Join a multi-host run through `jax.distributed`; returns True when it initialised.

    Explicit arguments win; otherwise TPU pods, SLURM and other clusters JAX knows are
    auto-detected. On a single host without a cluster environment nothing happens.
    """
    if coordinator_address or num_processes:
        if not (coordinator_address and num_processes is not None and process_id is not None):
            raise ValueError("multi-host: give coordinator_address, num_processes and process_id together")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_device_ids)
        return True
    if _in_cluster():
        try:
            jax.distributed.initialize()
            return True
        except (ValueError, RuntimeError) as e:  # not actually a multi-process cluster
            logging.warning("jax.distributed auto-detection failed (%s); running single-process", e)
    return False


def _in_cluster() -> bool:
    """Whether this process looks like one of several in a cluster JAX can auto-detect:
    a Cloud TPU VM (TPU device files and libtpu; JAX reads the slice from the VM metadata),
    a SLURM job step with several tasks, or an Open MPI / Megascale launch."""
    if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    if any(os.environ.get(k) for k in ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS",
                                       "OMPI_COMM_WORLD_SIZE")):
        return True
    has_tpu = bool(glob.glob("/dev/accel*")) or os.path.isdir("/dev/vfio")
    return has_tpu and importlib.util.find_spec("libtpu") is not None


def check_batch_fits_mesh(batch_size: int, grad_accum_steps: int, mesh: Mesh) -> None:
    """Raise ValueError unless every micro-batch (`batch_size / grad_accum_steps` rows) splits
    evenly over the mesh's batch axes (dp x fsdp) and the global batch over the processes.

    Called at start-up, so a bad setting fails at once with the numbers that matter rather
    than deep inside batch assembly at the first step."""
    shards = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
    processes = jax.process_count()
    setting = (f"batch_size {batch_size} with grad_accum_steps {grad_accum_steps} on mesh {dict(mesh.shape)}")
    if grad_accum_steps < 1 or batch_size % grad_accum_steps:
        raise ValueError(f"{setting}: batch_size must be a multiple of grad_accum_steps")
    micro = batch_size // grad_accum_steps
    if micro % shards:
        raise ValueError(f"{setting}: each micro-batch of {micro} rows must split evenly over the "
                         f"{shards} batch shards (dp x fsdp); make batch_size / grad_accum_steps a multiple "
                         f"of {shards}")
    if batch_size % processes:
        raise ValueError(f"{setting}: the global batch must split evenly over {processes} processes")


def host_batch_slice(global_batch: int) -> slice:
    """Rows of the global batch this process feeds (an equal contiguous share)."""
    n, i = jax.process_count(), jax.process_index()
    if global_batch % n:
        raise ValueError(f"global batch {global_batch} is not divisible by {n} processes")
    per = global_batch // n
    return slice(i * per, (i + 1) * per)


def global_batch_from_host(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble a global batch from this host's rows (each host passes only its own slice)."""
    out = {}
    for name, array in local.items():
        sharding = batch_sharding(mesh, np.ndim(array))
        out[name] = jax.make_array_from_process_local_data(sharding, np.asarray(array))
    return out
