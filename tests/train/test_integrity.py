"""Checksums, the non-finite step guard and the save-time refusal of non-finite state."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from easylm_imitate.models import build_model, get_preset
from easylm_imitate.train import integrity, run_checkpoint
from easylm_imitate.train.nonfinite import NonFiniteError, NonFiniteGuard
from easylm_imitate.train.step import TrainState, train_step


def test_checksum_is_mesh_independent_and_sees_one_flipped_bit():
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    mesh = jax.make_mesh((8,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("d")))
    plain, _ = integrity.tree_digest({"w": jnp.asarray(x)})
    assert integrity.tree_digest({"w": sharded})[0] == plain
    flipped = x.copy()
    flipped.view(np.uint32)[5, 3] ^= 1 << 12
    assert integrity.tree_digest({"w": jnp.asarray(flipped)})[0] != plain
    with pytest.raises(integrity.IntegrityError, match=r"checksum mismatch in params: \['w'\]"):
        integrity.verify_digests({"params": {"w": jnp.asarray(flipped)}}, {"params": plain})


def test_save_refuses_nonfinite_state_and_writes_nothing(tmp_path):
    params = {"w": jnp.ones((4,)).at[2].set(jnp.inf)}
    with run_checkpoint.manager(str(tmp_path)) as mgr:
        with pytest.raises(NonFiniteError, match=r"params: \['w'\]"):
            run_checkpoint.save(mgr, 1, params, {"count": jnp.zeros((), jnp.int32)}, {"next_index": 1},
                                {"step": 1}, force=True)
    assert not (tmp_path / "checkpoints" / "1").exists()


@pytest.fixture(scope="module")
def one_step():
    graphdef, state = nnx.split(build_model(get_preset("tiny-llama"), 0))
    params = state.to_pure_dict()
    optimizer = optax.adamw(1e-3)
    start = TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.integers(0, 512, (2, 16), dtype=np.int32),
             "targets": rng.integers(0, 512, (2, 16), dtype=np.int32),
             "weights": np.ones((2, 16), np.float32), "segment_ids": np.ones((2, 16), np.int32),
             "positions": np.tile(np.arange(16, dtype=np.int32), (2, 1))}
    make = functools.partial(train_step, graphdef, optimizer, optax.constant_schedule(1e-3), 1)
    return start, batch, make


def test_skip_mode_keeps_the_previous_state_on_a_nan_step(one_step):
    start, batch, make = one_step
    poisoned = dict(batch, weights=batch["weights"].copy())
    poisoned["weights"][0, 3] = np.nan
    for skip in (False, True):
        state, metrics = jax.jit(functools.partial(make, skip_nonfinite=skip))(start, poisoned)
        assert float(metrics["nonfinite"]) == 1.0
        kept = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(start.params)))
        assert kept == skip
    _, metrics = jax.jit(functools.partial(make, skip_nonfinite=True))(start, batch)
    assert float(metrics["nonfinite"]) == 0.0


def test_guard_stops_at_the_first_nonfinite_step_or_counts_it():
    finite = {"nonfinite": 0.0, "loss": 1.0, "grad_norm": 1.0}
    bad = {"nonfinite": 1.0, "loss": float("nan"), "grad_norm": float("nan")}
    guard = NonFiniteGuard("stop")
    guard.observe(1, finite)
    guard.observe(2, bad)  # read one step late ...
    with pytest.raises(NonFiniteError, match="step 2: loss nan"):
        guard.settle()  # ... or at once before a save
    skip = NonFiniteGuard("skip")
    for step, m in enumerate([finite, bad, bad, finite], 1):
        skip.observe(step, m)
    assert skip.log_scalars({"loss": 1.0, "nonfinite": 0.0}) == {"loss": 1.0, "skipped_steps": 2.0}
    with pytest.raises(ValueError, match="config.nonfinite"):
        NonFiniteGuard("ignore")
