"""Sharded forward equals single-device forward; FSDP really splits every large parameter."""

import collections
import logging
import re

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


# ---- every path through the model partitions like the train step ---------------------------

_COLLECTIVE = re.compile(r"= ([a-z]\w*\[[\d,]*\])[^=\n]*? (all-gather|all-reduce|reduce-scatter|all-to-all)\(")


def _float_collectives(compiled) -> collections.Counter:
    """(result shape, collective) -> count, for every floating-point collective in the HLO."""
    found = _COLLECTIVE.findall(compiled.as_text())
    return collections.Counter((shape, op) for shape, op in found if shape.startswith(("f", "bf")))


def _temp_bytes(compiled) -> int:
    return compiled.memory_analysis().temp_size_in_bytes


def test_eval_sampler_prefill_and_scorer_partition_like_the_train_forward():
    """On an 8-device FSDP mesh, the model pins its own per-layer weights and activations, so
    the eval step, the sampler's prefill and the scorer all-gather the same per-layer weight
    slices as the train step's forward, all-reduce no activations, and need about the same
    temporary memory (without the pins they all-reduced full-batch activations and needed
    several times the train forward's temporaries)."""
    import optax

    from easylm_imitate.inference.sampler import Sampler
    from easylm_imitate.inference.scoring import Scorer
    from easylm_imitate.train import state as state_lib
    from easylm_imitate.train.step import eval_step, loss_terms

    cfg = get_preset("tiny-llama")
    b, t, new = 16, 128, 16
    mesh = parallel.make_mesh("dp:1,fsdp:8,tp:1")
    lay = state_lib.layout(cfg, optax.adamw(1e-3), mesh, "fsdp")
    rows = parallel.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct((b, t), jnp.float32 if k == "weights" else jnp.int32, sharding=rows)
             for k in ("inputs", "targets", "weights", "segment_ids", "positions")}
    params = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          lay.params_shapes, lay.params_shardings)
    with jax.set_mesh(mesh):
        train_fwd = jax.jit(lambda p, x: loss_terms(lay.graphdef, p, x)[1]).lower(params, batch).compile()
        evaluate = jax.jit(lambda p, x: eval_step(lay.graphdef, p, x)).lower(params, batch).compile()

    model = parallel.create_sharded_model(lambda: build_model(cfg, seed=0), mesh, "fsdp")
    scorer = Scorer(model, mesh)
    sampler = Sampler(scorer.runtime)
    rt = scorer.runtime
    with rt.active():
        full = lambda dtype, value=0: rt.put(np.full((b,), value, dtype))  # noqa: E731
        score = scorer._score.lower(rt.params, rt.put(np.zeros((b, t), np.int32)), full(np.int32, t), top=0).compile()
        prefill = sampler._start.lower(
            rt.params, rt.put(np.zeros((b, t), np.int32)), full(np.int32, t), full(np.int32, new),
            full(np.float32), full(np.int32), full(np.float32, 1), full(np.uint32), jnp.full((4,), -1, jnp.int32),
            new_len=new, mode="greedy").compile()

    # The train forward all-gathers each layer's FSDP-split weight slices and reduces nothing.
    want = _float_collectives(train_fwd)
    d, hd = cfg.hidden_size, cfg.dim_per_head
    wq_slice = f"f32[{d},{cfg.num_heads * hd}]"  # one layer's wq, gathered as [embed, heads*head_dim]
    gate_slice = f"f32[{d},{cfg.intermediate_size}]"
    assert want[(wq_slice, "all-gather")] >= 1 and want[(gate_slice, "all-gather")] >= 1, want
    assert not [k for k in want if k[1] != "all-gather"], want
    for name, compiled in (("eval step", evaluate), ("scorer", score), ("sampler prefill", prefill)):
        assert _float_collectives(compiled) == want, name
        ratio = _temp_bytes(compiled) / _temp_bytes(train_fwd)
        assert ratio <= 1.10, f"{name}: {ratio:.2f}x the train forward's temporaries"


def test_load_with_a_mesh_gives_the_model_its_rules_and_without_none():
    """`easylm_imitate.load(mesh=...)` builds through `api.model_from_params`: the model it
    returns constrains its layers by the same rules table the train layout uses."""
    from easylm_imitate.api import model_from_params

    cfg = get_preset("tiny-gpt2")
    mesh = parallel.make_mesh("dp:2,fsdp:4,tp:1")

    def zeros(target):
        return jax.tree.map(lambda t: jax.device_put(np.zeros(t.shape, t.dtype), t.sharding), target)

    sharded = model_from_params(cfg, zeros, mesh, "fsdp")
    assert sharded.sharding_rules == parallel.ShardingRules.create(mesh, "fsdp")
    assert nnx.split(sharded)[0] != nnx.split(model_from_params(cfg, zeros))[0]  # the rules are in the graphdef
    assert model_from_params(cfg, zeros).sharding_rules is None
