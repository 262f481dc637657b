"""What the sampler and the scorer share: a model split for jit, a mesh, shape buckets."""

from __future__ import annotations

import contextlib

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from easylm_imitate import parallel


def bucket(n: int, minimum: int = 16) -> int:
    """The smallest power of two >= max(n, minimum): the padded size a length compiles for."""
    size = max(int(minimum), 1)
    while size < n:
        size *= 2
    return size


class ModelRuntime:
    """A model split into (graphdef, params) for pure jitted functions, on an optional mesh.

    Batches are padded to a power of two that the mesh's batch axes (dp x fsdp) divide, and
    placed with the batch dimension sharded over them; parameters stay where they are (the
    model was loaded or sharded by the rules of `easylm_imitate.parallel`).
    """

    def __init__(self, model: nnx.Module, mesh: Mesh | None = None):
        self.cfg = model.cfg
        self.graphdef, self.params = nnx.split(model)
        self.mesh = mesh
        self.batch_multiple = 1
        if mesh is not None:
            self.batch_multiple = int(np.prod([mesh.shape[a] for a in parallel.BATCH_AXES]))

    def model(self, params) -> nnx.Module:
        """The model rebuilt from (traced) params inside a jitted function."""
        return nnx.merge(self.graphdef, params)

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
