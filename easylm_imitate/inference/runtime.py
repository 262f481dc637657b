"""What the sampler and the scorer share: a model split for jit, a mesh, shape buckets."""

from __future__ import annotations

import contextlib
import functools
import logging
import time

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from easylm_imitate import parallel


def bucket(n: int, minimum: int = 16) -> int:
    """The smallest power of two >= max(n, minimum): the padded size a length compiles for."""
    size = max(int(minimum), 1)
    while size < n:
        size *= 2
    return size


class CompileLog:
    """Counts the compiles of jitted steps and logs each one: a line when a new shape starts
    compiling (a cold request can wait a minute for it on a big model) and its time when done.

    Wrap calls in `call(label, fn, ...)` and call `traced()` inside the jitted function (it
    runs only when jit traces, i.e. for a shape it has not compiled yet).
    """

    def __init__(self, logger: logging.Logger):
        self.count = 0
        self._log = logger
        self._label = "a jitted step"

    def traced(self) -> None:
        """Note a trace of the step being called (from inside the jitted function)."""
        self.count += 1
        self._log.info("compiling %s: the first use of this shape waits for it", self._label)

    def call(self, label: str, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` for the shape `label` names; logs the compile time if it compiled."""
        before, start = self.count, time.perf_counter()
        self._label = label
        out = fn(*args, **kwargs)
        if self.count != before:
            self._log.info("compiled %s in %.1f s", label, time.perf_counter() - start)
        return out


def unstack_layers(stacked: dict[str, jax.Array]) -> list[dict[str, jax.Array]]:
    """Stacked block parameters ([layers, ...] each) as one dict of separate buffers per
    layer, each keeping its share of a mesh sharding (the layers axis dropped)."""
    layers = next(iter(stacked.values())).shape[0]

    def layer_sharding(a):
        s = a.sharding
        if isinstance(s, NamedSharding):
            return NamedSharding(s.mesh, PartitionSpec(*tuple(s.spec)[1:]))
        return s

    shardings = [{k: layer_sharding(v) for k, v in stacked.items()}] * layers
    split = jax.jit(lambda s: [{k: v[i] for k, v in s.items()} for i in range(layers)], out_shardings=shardings)
    return split(stacked)


class ModelRuntime:
    """A model split into (graphdef, params) for pure jitted functions, on an optional mesh.

    Batches are padded to a power of two that the mesh's batch axes (dp x fsdp) divide, and
    placed with the batch dimension sharded over them; parameters stay where they are (the
    model was loaded or sharded by the rules of `easylm_imitate.parallel`).

    With `per_layer` (default: without a mesh, when the parameters live on CPU) the block
    parameters are copied once into one buffer per layer and the model runs its layers
    unrolled (see `DecoderLM.__call__`'s `layer_params`): XLA:CPU would otherwise copy every
    layer's weights out of the stack at every decode step, which costs more than the matmuls.
    The stacked originals are then only referenced by the caller's model object. On a mesh
    the layers are scanned over the stacked weights, exactly as the train step runs them (the
    model's sharding rules pin each layer's slice), so prefill and scoring partition like
    training and need about the same temporary memory.
    """

    def __init__(self, model: nnx.Module, mesh: Mesh | None = None, *, per_layer: bool | None = None):
        self.cfg = model.cfg
        self.mesh = mesh
        self.batch_multiple = 1
        if mesh is not None:
            self.batch_multiple = int(np.prod([mesh.shape[a] for a in parallel.BATCH_AXES]))
        if per_layer is None:
            per_layer = mesh is None and all(
                d.platform == "cpu" for d in jax.tree.leaves(nnx.state(model))[0].devices())
        self.per_layer = per_layer
        if per_layer:
            self.graphdef, blocks, rest = nnx.split(model, nnx.PathContains("blocks"), ...)
            self._abstract_blocks = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), blocks)
            self.params = (rest, unstack_layers(blocks.to_pure_dict()["blocks"]))
        else:
            self.graphdef, self.params = nnx.split(model)

    @classmethod
    def of(cls, model: "nnx.Module | ModelRuntime", mesh: Mesh | None = None) -> "ModelRuntime":
        """`model` itself if it is already a runtime (to share one copy of the weights
        between a sampler and a scorer), else a new runtime for it."""
        if isinstance(model, ModelRuntime):
            if mesh is not None and mesh is not model.mesh:
                raise ValueError("pass the mesh to the ModelRuntime, not again with it")
            return model
        return cls(model, mesh)

    def model(self, params):
        """The model rebuilt from (traced) params inside a jitted function: a callable with
        the model's `__call__` signature."""
        if not self.per_layer:
            return nnx.merge(self.graphdef, params)
        rest, layer_params = params
        return functools.partial(nnx.merge(self.graphdef, self._abstract_blocks, rest), layer_params=layer_params)

    def batch_bucket(self, rows: int) -> int:
        """Padded batch size for `rows` real rows."""
        return bucket(rows, self.batch_multiple)

    @contextlib.contextmanager
    def active(self):
        """Context in which jitted calls run (the mesh, when there is one)."""
        if self.mesh is None:
            yield
        else:
            with jax.set_mesh(self.mesh):
                yield

    def put(self, array: np.ndarray) -> jax.Array:
        """A host batch array on device: batch dimension sharded over dp x fsdp on a mesh."""
        if self.mesh is None:
            return jax.device_put(array, self.params_device())
        return jax.device_put(array, parallel.batch_sharding(self.mesh, np.ndim(array)))

    def params_device(self):
        """The device the (unsharded) parameters live on."""
        leaf = jax.tree.leaves(self.params)[0]
        return next(iter(leaf.devices()))
