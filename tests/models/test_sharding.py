"""Sharded forward equals single-device forward; FSDP really splits every large parameter."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from easylm_imitate import parallel
from easylm_imitate.models import build_model, get_preset

LARGE = 1_000_000  # elements


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2"])
def test_sharded_forward_equals_single_device(preset):
    cfg = get_preset(preset)
    single = build_model(cfg, seed=3)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (4, 16)), jnp.int32)
    expected = np.asarray(single(ids))

    mesh = parallel.make_mesh("dp:2,fsdp:2,tp:2")
    sharded = build_model(cfg, seed=3)
    parallel.shard_model(sharded, mesh, "fsdp_tp")
    specs = {k: v.sharding.spec for k, v in nnx.state(sharded, nnx.Param).flat_state()}
    wq_spec = specs[("blocks", "wq")]
    assert "fsdp" in wq_spec and "tp" in wq_spec  # the model really is split both ways
    graphdef, state = nnx.split(sharded)
    with jax.set_mesh(mesh):
        forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
        got = forward(state, jax.device_put(ids, parallel.batch_sharding(mesh)))
    assert len(got.sharding.device_set) == 8
    assert np.abs(np.asarray(got) - expected).max() <= 1e-5


def _split_report(preset: str, mesh_spec: str, rules: str) -> dict:
    """name -> (elements, elements per device) for every parameter, without allocating."""
    cfg = get_preset(preset)
    _, abstract = nnx.split(nnx.eval_shape(lambda: build_model(cfg)))
    shardings = parallel.state_shardings(abstract, parallel.make_mesh(mesh_spec), rules)
    shapes = dict(abstract.flat_state())
    out = {}
    for path, var in shardings.flat_state():
        shape = shapes[path].get_value().shape
        out["/".join(map(str, path))] = (int(np.prod(shape)), int(np.prod(var.get_value().shard_shape(shape))))
    return out


@pytest.mark.parametrize("preset", ["llama-7b", "llama-13b", "gpt2-xl", "smollm2-135m", "llama3-8b"])
@pytest.mark.parametrize("mesh_spec,rules", [("dp:1,fsdp:8,tp:1", "fsdp"), ("dp:2,fsdp:2,tp:2", "fsdp")])
def test_fsdp_splits_every_large_parameter(preset, mesh_spec, rules):
    report = _split_report(preset, mesh_spec, rules)
    large = {name: sizes for name, sizes in report.items() if sizes[0] >= LARGE}
    assert large
    fsdp = parallel.parse_mesh_spec(mesh_spec, 8)["fsdp"]
    unsplit = [name for name, (total, per_device) in large.items() if per_device * fsdp != total]
    assert not unsplit, f"{preset}: not split {fsdp} ways: {unsplit}"


def test_fsdp_tp_splits_large_parameters_over_both_axes():
    report = _split_report("llama-7b", "dp:2,fsdp:2,tp:2", "fsdp_tp")
    for name, (total, per_device) in report.items():
        if total >= LARGE:
            assert per_device * 4 == total, name


def test_model_creation_warns_about_a_dimension_the_mesh_cannot_split(caplog):
    # tiny-gpt2 has 4 heads: tp=8 cannot split them, so they stay whole on every device.
    mesh = parallel.make_mesh("dp:1,fsdp:1,tp:8")
    with caplog.at_level(logging.WARNING):
        model = parallel.create_sharded_model(lambda: build_model(get_preset("tiny-gpt2"), seed=0), mesh, "fsdp_tp")
    assert nnx.state(model, nnx.Param)["blocks"]["wq"].get_value().sharding.spec[2] is None
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    wq = [line for line in lines if "parameter blocks/wq:" in line]
    assert wq and "dimension 2 (heads, size 4)" in wq[0] and "mesh axis tp" in wq[0], lines
    assert not any("parameter wte:" in line for line in lines)  # vocab 512 does split 8 ways


def test_unsplit_dimensions_names_gpt2_vocab_and_gpt2_xl_heads():
    from easylm_imitate.train.state import logical_axes

    def unsplit(preset, mesh_spec):
        cfg = get_preset(preset)
        shapes = nnx.state(nnx.eval_shape(lambda: build_model(cfg))).to_pure_dict()
        return parallel.unsplit_dimensions(shapes, logical_axes(cfg), parallel.make_mesh(mesh_spec), "fsdp_tp")

    gpt2 = unsplit("gpt2", "dp:1,fsdp:4,tp:2")
    assert len(gpt2) == 1 and gpt2[0].startswith("parameter wte: dimension 0 (vocab, size 50257)"), gpt2
    xl = unsplit("gpt2-xl", "dp:2,fsdp:2,tp:2")
    assert any(line.startswith("parameter blocks/wq: dimension 2 (heads, size 25)") for line in xl), xl
    assert unsplit("llama-7b", "dp:2,fsdp:2,tp:2") == []
    assert unsplit("gpt2", "dp:1,fsdp:8,tp:1") == []  # tp=1 splits nothing, so nothing is left whole
