"""`model.attention=splash`: the Pallas TPU kernel gives the dense mask's outputs and gradients
(run in the Pallas interpreter on CPU, inside the shard_map a mesh puts it in), and a train
step with it compiles ahead of time for a TPU slice from this CPU host."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models.attention_helpers import SEGMENTS, dense_mask, inputs, reference, self_mask, value_and_grads

from easylm_imitate import parallel
from easylm_imitate.models import attention, splash


def test_splash_matches_the_dense_mask_under_a_mesh():
    q, k, v, cot = inputs()
    mask, dense = self_mask()
    mesh = parallel.make_mesh("dp:1,fsdp:2,tp:2", devices=jax.devices()[:4])
    assert splash._mesh_specs(mesh, 2, 4, 2) == jax.sharding.PartitionSpec(("dp", "fsdp"), "tp", None, None)
    with jax.set_mesh(mesh):
        got = value_and_grads(lambda q, k, v: splash.causal_attention(q, k, v, mask.q_segments, interpret=True),
                               q, k, v, cot)
    want = value_and_grads(lambda q, k, v: reference(q, k, v, dense), q, k, v, cot)
    for name, g, w in zip(["out", "dq", "dk", "dv"], got, want):
        np.testing.assert_allclose(g, w, atol=3e-5, err_msg=name)


def test_splash_tiles():
    assert [splash._block(t) for t in (128, 256, 384, 2048)] == [128, 256, 384, 512]
    assert not splash.supports_length(100) and not splash.supports_length(64) and splash.supports_length(2048)


def test_splash_lengths_it_cannot_tile_run_the_xla_path(monkeypatch):
    monkeypatch.setattr(attention, "current_backend", lambda: "tpu")
    monkeypatch.setattr(splash, "causal_attention", lambda *a, **k: pytest.fail("splash called for 100 tokens"))
    q, k, v, _ = inputs(t=100)
    slots = jnp.broadcast_to(jnp.arange(100), (2, 100))
    seg = jnp.asarray(SEGMENTS[:, :100])
    got = attention.causal_self_attention(q, k, v, attention.attention_mask(slots, slots, seg, seg), "auto")
    np.testing.assert_allclose(got, reference(q, k, v, dense_mask(slots, slots, seg, seg)), atol=2e-5)


def test_tiny_train_step_with_splash_compiles_for_a_tpu_slice(monkeypatch):
    # llama-7b at 2048 tokens takes minutes to compile here (figures: tpu_scripts/README.md,
    # bench/RESULTS.md); a tiny model takes the same path: TPU topology, fsdp x tp mesh.
    from support.train_helpers import smoke_config

    from easylm_imitate.train.memory_plan import plan

    calls = []
    real = splash.causal_attention
    monkeypatch.setattr(splash, "causal_attention", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    config = smoke_config(**{"model.attention": "auto", "model.dtype": "bfloat16", "seq_length": 256,
                             "mesh": "dp:1,fsdp:4,tp:2"})
    report = plan(config, topology="v5e-8")
    assert calls, "auto did not pick splash when compiling for TPU"
    assert report.fits and report.temp_bytes > 0, report.render()
