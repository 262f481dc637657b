"""The KV-cache sampler against a plain full-forward greedy loop, plus sampling, stopping,
bucketing and sharding behaviour a user relies on."""

import jax.numpy as jnp
import numpy as np
import pytest

from easylm_imitate import parallel
from easylm_imitate.inference.runtime import ModelRuntime
from easylm_imitate.inference.sampler import Sampler
from easylm_imitate.inference.sampling import SamplingParams
from easylm_imitate.models import build_model, get_preset

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], list(range(20, 40))]


@pytest.fixture(scope="module")
def model():
    return build_model(get_preset("tiny-llama"), seed=0)


@pytest.fixture(scope="module")
def sampler(model):
    return Sampler(model, chunk=4)


def full_forward_greedy(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(jnp.argmax(model(jnp.asarray([ids]))[0, -1])))
    return ids[len(prompt):]


def test_greedy_batch_equals_full_forward_loop(model, sampler):
    out = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=12))
    for prompt, gen in zip(PROMPTS, out):
        assert gen.tokens == full_forward_greedy(model, prompt, 12)
        assert gen.finish_reason == "length"


def test_row_result_does_not_depend_on_batch_mates(sampler):
    params = SamplingParams(max_new_tokens=12, temperature=0.8, top_k=20, top_p=0.9, seed=7)
    alone = sampler.generate([PROMPTS[1]], params)[0].tokens
    batched = sampler.generate(PROMPTS, params)[1].tokens
    assert alone == batched


def test_lengths_in_one_bucket_reuse_the_compiled_functions(sampler):
    sampler.generate([[1, 2, 3]], SamplingParams(max_new_tokens=5))
    traces = sampler.traces
    sampler.generate([[4, 5, 6, 7, 8, 9]], SamplingParams(max_new_tokens=9))
    assert sampler.traces == traces


def test_seed_reproduces_and_varies(sampler):
    def run(seed):
        return sampler.generate([PROMPTS[0]], SamplingParams(max_new_tokens=16, temperature=1.5, seed=seed))[0].tokens
    assert run(1) == run(1)
    assert run(1) != run(2)


def test_top_k_one_is_greedy(sampler):
    greedy = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=8))
    top1 = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=1.0, top_k=1, seed=3))
    assert [g.tokens for g in greedy] == [g.tokens for g in top1]


def test_tiny_top_p_is_greedy(sampler):
    greedy = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=8))
    nucleus = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=1.0, top_p=1e-6, seed=3))
    assert [g.tokens for g in greedy] == [g.tokens for g in nucleus]


def test_stops_at_any_eos_id_and_per_row_limits(sampler):
    free = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=12))
    eos = free[0].tokens[4]
    first = free[0].tokens.index(eos)
    params = [SamplingParams(max_new_tokens=12), SamplingParams(max_new_tokens=3), SamplingParams(max_new_tokens=0)]
    out = sampler.generate(PROMPTS, params, eos_ids=[9999 % 512, eos])
    assert out[0].tokens == free[0].tokens[:first] and out[0].finish_reason == "stop"
    assert len(out[1].tokens) <= 3 and out[2].tokens == []


def test_stop_check_ends_rows_between_chunks(sampler):
    out = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=30), stop_check=lambda i, toks: len(toks) >= 5)
    for g in out:
        assert 5 <= len(g.tokens) <= 5 + sampler.chunk and g.finish_reason == "stop"


def test_sharded_generation_equals_single_device(model, sampler):
    mesh = parallel.make_mesh("dp:2,fsdp:2,tp:2")
    sharded = parallel.shard_model(build_model(get_preset("tiny-llama"), seed=0), mesh, "fsdp_tp")
    want = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=8))
    got = Sampler(sharded, mesh).generate(PROMPTS, SamplingParams(max_new_tokens=8))
    assert [g.tokens for g in got] == [g.tokens for g in want]


def test_stacked_and_per_layer_weights_generate_the_same(model, sampler):
    assert sampler.runtime.per_layer  # the CPU default: one buffer per layer, layers unrolled
    stacked = Sampler(ModelRuntime(model, per_layer=False))
    params = SamplingParams(max_new_tokens=10, temperature=0.8, top_k=20, seed=3)
    got = sampler.generate(PROMPTS, params)
    want = stacked.generate(PROMPTS, params)
    assert [g.tokens for g in got] == [g.tokens for g in want]


def test_per_layer_buffers_keep_their_mesh_sharding():
    mesh = parallel.make_mesh("dp:2,fsdp:2,tp:2")
    sharded = parallel.shard_model(build_model(get_preset("tiny-llama"), seed=0), mesh, "fsdp_tp")
    runtime = ModelRuntime(sharded, mesh, per_layer=True)  # on a mesh the default scans the stack
    layers = runtime.params[1]
    assert len(layers) == sharded.cfg.num_layers
    stacked_spec = tuple(sharded.blocks.w_gate[...].sharding.spec)
    assert tuple(layers[1]["w_gate"].sharding.spec) == stacked_spec[1:]
    np.testing.assert_array_equal(np.asarray(layers[1]["w_gate"]), np.asarray(sharded.blocks.w_gate[...][1]))
    stacked = Sampler(ModelRuntime(sharded, mesh, per_layer=False))
    want = stacked.generate(PROMPTS, SamplingParams(max_new_tokens=6))
    got = Sampler(runtime).generate(PROMPTS, SamplingParams(max_new_tokens=6))
    assert [g.tokens for g in got] == [g.tokens for g in want]


def test_bad_arguments_are_refused(sampler):
    with pytest.raises(ValueError, match="at least one token"):
        sampler.generate([[]], SamplingParams())
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="2 sampling"):
        sampler.generate([[1]], [SamplingParams(), SamplingParams()])
