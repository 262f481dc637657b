"""Memory planning before renting hardware: compile the train step ahead of time for the
configured mesh, on the local devices or on a TPU topology that is not present, and report
per-device memory (parameters, optimizer state, activations and temporaries).

TPU topologies need the TPU extra (`pip install -e ".[tpu]"`: `jax[tpu]` pins a `libtpu`
that installs and compiles on a CPU machine).
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import numpy as np

from easylm_imitate import parallel
from easylm_imitate.lora import adapters as lora_adapters
from easylm_imitate.train import state as state_lib

GIB = 1024 ** 3
# Slice name -> (topology name for jax.experimental.topologies, chips per host bounds, HBM per chip).
# TPU v4 and v5p names count TensorCores (2 per chip); v5e and v6e names count chips.
TPU_TOPOLOGIES = {
    "v4-8": ("v4:2x2x1", (2, 2, 1), 32 * GIB), "v4-16": ("v4:2x2x2", (2, 2, 1), 32 * GIB),
    "v4-32": ("v4:2x2x4", (2, 2, 1), 32 * GIB), "v4-64": ("v4:2x4x4", (2, 2, 1), 32 * GIB),
    "v4-128": ("v4:4x4x4", (2, 2, 1), 32 * GIB), "v4-256": ("v4:4x4x8", (2, 2, 1), 32 * GIB),
    "v5p-8": ("v5p:2x2x1", (2, 2, 1), 95 * GIB), "v5p-16": ("v5p:2x2x2", (2, 2, 1), 95 * GIB),
    "v5p-32": ("v5p:2x2x4", (2, 2, 1), 95 * GIB), "v5p-64": ("v5p:2x4x4", (2, 2, 1), 95 * GIB),
    "v5e-4": ("v5e:2x2", (2, 2, 1), 16 * GIB), "v5e-8": ("v5e:2x4", (2, 2, 1), 16 * GIB),
    "v5e-16": ("v5e:4x4", (2, 2, 1), 16 * GIB), "v5e-32": ("v5e:4x8", (2, 2, 1), 16 * GIB),
    "v5e-64": ("v5e:8x8", (2, 2, 1), 16 * GIB), "v5e-128": ("v5e:8x16", (2, 2, 1), 16 * GIB),
    "v5e-256": ("v5e:16x16", (2, 2, 1), 16 * GIB),
    "v6e-8": ("v6e:2x4", (2, 2, 1), 32 * GIB), "v6e-16": ("v6e:4x4", (2, 2, 1), 32 * GIB),
    "v6e-32": ("v6e:4x8", (2, 2, 1), 32 * GIB), "v6e-64": ("v6e:8x8", (2, 2, 1), 32 * GIB),
}


@dataclasses.dataclass
class MemoryPlan:
    """Per-device bytes of one compiled train step, and whether it fits the device."""

    target: str
    devices: int
    mesh: dict
    params_bytes: int
    opt_state_bytes: int
    batch_bytes: int
    temp_bytes: int  # activations kept for the backward pass plus scratch
    output_bytes: int
    alias_bytes: int
    code_bytes: int
    capacity_bytes: int | None
    fits: bool | None
    error: str | None = None
    # Parameter dimensions the sharding rules name but the mesh cannot split evenly.
    unsplit: list[str] = dataclasses.field(default_factory=list)
    model: str = ""  # which model, its size and the batch, e.g. "preset smollm2-135m: 134.5M params, ..."
    frozen_bytes: int = 0  # LoRA: the frozen (possibly quantised) base; `params` are then the adapters

    def _param_lines(self, g) -> list[str]:
        frozen = [f"  frozen base       {g(self.frozen_bytes)} per device"] if self.frozen_bytes else []
        label = "adapters         " if self.frozen_bytes else "parameters       "
        return [*frozen, f"  {label} {g(self.params_bytes)} per device",
                f"  optimizer state   {g(self.opt_state_bytes)} per device"]

    @property
    def peak_bytes(self) -> int:
        """Arguments + temporaries + outputs not aliased to (donated) arguments."""
        args = self.frozen_bytes + self.params_bytes + self.opt_state_bytes + self.batch_bytes
        return args + self.temp_bytes + max(self.output_bytes - self.alias_bytes, 0) + self.code_bytes

    def render(self) -> str:
        """Human-readable table."""
        g = lambda b: f"{b / GIB:8.2f} GiB"  # noqa: E731
        unsplit = [f"  warning: {line}" for line in self.unsplit]
        model = [f"  model             {self.model}"] if self.model else []
        if self.error:
            return "\n".join([f"DOES NOT FIT on {self.target} ({self.devices} devices, mesh {self.mesh}):",
                              *model, *self._param_lines(g),
                              f"  compiler: {self.error}", *unsplit])
        lines = [f"memory plan for {self.target}: {self.devices} devices, mesh {self.mesh}", *model,
                 *self._param_lines(g),
                 f"  batch             {g(self.batch_bytes)} per device",
                 f"  activations+temp  {g(self.temp_bytes)} per device",
                 f"  outputs (donated) {g(max(self.output_bytes - self.alias_bytes, 0))} per device",
                 f"  total (peak)      {g(self.peak_bytes)} per device"]
        if self.capacity_bytes:
            verdict = "fits" if self.fits else "DOES NOT FIT"
            lines.append(f"  device memory     {g(self.capacity_bytes)} -> {verdict}")
        return "\n".join(lines + unsplit)


def per_device_bytes(shapes, shardings) -> int:
    """Bytes one device holds of arrays with these shapes and shardings."""
    sizes = jax.tree.map(lambda a, s: int(np.prod(s.shard_shape(a.shape))) * np.dtype(a.dtype).itemsize,
                         shapes, shardings)
    return int(sum(jax.tree.leaves(sizes)))


def topology_devices(name: str):
    """Compile-only devices for a TPU slice name such as 'v4-32' or 'v5e-16'."""
    if name not in TPU_TOPOLOGIES:
        raise ValueError(f"--compile_topology: unknown slice {name!r}; known: {', '.join(TPU_TOPOLOGIES)}")
    topo_name, per_host, hbm = TPU_TOPOLOGIES[name]
    from jax.experimental import topologies

    # Compile-only use: several planners (or a planner beside a CPU run) may load libtpu at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    # v4 and v5p chips run their two TensorCores as one device ("megacore"), as on Cloud TPU.
    chip_config = "megacore" if topo_name.startswith(("v4", "v5p")) else "default"
    try:
        topo = topologies.get_topology_desc(platform="tpu", topology_name=topo_name, chip_config_name=chip_config,
                                            chips_per_host_bounds=per_host, num_slices=1, wrap=(False, False, False))
    except Exception as e:  # noqa: BLE001 - report why the TPU compiler is unavailable
        raise RuntimeError(f"cannot compile for TPU {name}: {e}. Install the TPU extra: pip install -e '.[tpu]'") from e
    return list(topo.devices), hbm


def _capacity(devices) -> int | None:
    """Memory of one device when the runtime reports it."""
    try:
        stats = devices[0].memory_stats()
        return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None
    except Exception:  # noqa: BLE001 - CPU and compile-only devices have no stats
        return None


def describe_model(config, cfg) -> str:
    """Which model a plan is for (the checkpoint or the preset), its size and the step's batch."""
    source = f"from {config.init_from}" if config.init_from else f"preset {config.model.preset}"
    lora = config.get("lora")
    tuned = (f"LoRA rank {lora.rank} on {lora.targets}, base {lora.base_dtype}; " if lora is not None and lora.rank
             else "")
    return (f"{source}: {cfg.num_params() / 1e6:,.1f}M params, {tuned}{cfg.dtype} compute, remat {cfg.remat}; "
            f"batch {config.batch_size} x {config.seq_length} tokens, grad_accum_steps {config.grad_accum_steps}")


def plan(config, topology: str = "") -> MemoryPlan:
    """Compile the configured train step ahead of time and report its per-device memory."""
    if topology:
        devices, capacity = topology_devices(topology)
        target = f"TPU {topology}"
    else:
        devices, capacity = jax.devices(), None
        capacity = _capacity(devices)
        target = f"{len(devices)} local {devices[0].platform.upper()} devices"
    mesh = parallel.make_mesh(config.mesh, devices=devices)
    parallel.check_batch_fits_mesh(config.batch_size, config.grad_accum_steps, mesh)
    cfg = state_lib.model_config(config)
    total_steps = config.total_steps or 1000
    lora_plan = None
    if lora_adapters.enabled(config):  # the adapters are the trained params; the base is a frozen argument
        from easylm_imitate.lora import run as lora_run

        lora_plan = lora_run.plan(config, cfg, total_steps, mesh)
        optimizer, schedule, lay = lora_plan.optimizer, lora_plan.schedule, lora_plan.lay
    else:
        optimizer, schedule = state_lib.build_optimizer(config, cfg, total_steps)
        lay = state_lib.layout(cfg, optimizer, mesh, config.sharding_rules)
    opt_shapes = jax.eval_shape(optimizer.init, lay.params_shapes)
    state_shapes = type(lay.state_shardings)(lay.params_shapes, opt_shapes, jax.ShapeDtypeStruct((), np.int32))
    b, t = config.batch_size, config.seq_length
    batch_shapes = {k: jax.ShapeDtypeStruct((b, t), np.float32 if k == "weights" else np.int32)
                    for k in ("inputs", "targets", "weights", "segment_ids", "positions")}
    batch_shardings = {k: parallel.batch_sharding(mesh) for k in batch_shapes}
    params_bytes = per_device_bytes(lay.params_shapes, lay.params_shardings)
    opt_bytes = per_device_bytes(opt_shapes, lay.opt_shardings)
    batch_bytes = per_device_bytes(batch_shapes, batch_shardings)
    step = state_lib.jit_train_step(lay, optimizer, schedule, config.grad_accum_steps, mesh,
                                     config.sharding_rules)
    args, frozen_bytes = (state_shapes, batch_shapes), 0
    if lora_plan is not None:
        from easylm_imitate.lora import step as lora_step

        step = lora_step.jit_train_step(lay, lora_plan.base_shardings, optimizer, schedule, config.grad_accum_steps,
                                        lora_plan.spec, config.seed, mesh)
        args = (state_shapes, lora_plan.stored_abstract, batch_shapes)
        frozen_bytes = per_device_bytes(lora_plan.stored_abstract, lora_plan.base_shardings)
    common = dict(target=target, devices=len(devices), mesh=dict(mesh.shape), params_bytes=params_bytes,
                  opt_state_bytes=opt_bytes, batch_bytes=batch_bytes, capacity_bytes=capacity,
                  model=describe_model(config, cfg), frozen_bytes=frozen_bytes,
                  unsplit=parallel.unsplit_dimensions(lay.params_shapes, lay.logical_axes, mesh,
                                                      config.sharding_rules))
    try:
        with jax.set_mesh(mesh):
            compiled = step.lower(*args).compile()
    except Exception as e:  # noqa: BLE001 - XLA reports over-size programs as RESOURCE_EXHAUSTED
        message = str(e)
        if "RESOURCE_EXHAUSTED" not in message and "exceeds" not in message.lower():
            raise
        summary = " ".join(message.split())
        match = re.search(r"(Ran out of memory.*?)(?:\. |$)", summary) or re.search(r"(RESOURCE_EXHAUSTED.*)", summary)
        return MemoryPlan(**common, temp_bytes=0, output_bytes=0, alias_bytes=0, code_bytes=0, fits=False,
                          error=(match.group(1) if match else summary)[:600])
    mem = compiled.memory_analysis()
    result = MemoryPlan(**common, temp_bytes=int(mem.temp_size_in_bytes), output_bytes=int(mem.output_size_in_bytes),
                        alias_bytes=int(mem.alias_size_in_bytes), code_bytes=int(mem.generated_code_size_in_bytes),
                        fits=None)
    if capacity:
        result.fits = result.peak_bytes <= capacity
    return result
