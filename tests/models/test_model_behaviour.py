"""What users rely on beyond HF parity: packing, presets, FLOPs, precision, remat, attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from models.hf_helpers import random_hf_model

from easylm_imitate.convert.hf_weights import from_torch_model
from easylm_imitate.models import build_model, get_preset


@pytest.fixture(scope="module")
def llama():
    """tiny-llama (GQA) with random weights of a realistic scale."""
    return from_torch_model(random_hf_model("tiny-llama", seed=4))


def _ids(cfg, shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, cfg.vocab_size, shape), jnp.int32)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2"])
def test_packed_segments_equal_each_segment_alone(preset):
    model = build_model(get_preset(preset), seed=5)
    a, b = _ids(model.cfg, (1, 7), 1), _ids(model.cfg, (1, 9), 2)
    packed = jnp.concatenate([a, b], axis=1)
    segments = jnp.asarray([[1] * 7 + [2] * 9])
    positions = jnp.asarray([list(range(7)) + list(range(9))])
    got = np.asarray(model(packed, positions=positions, segment_ids=segments))
    np.testing.assert_allclose(got[0, :7], np.asarray(model(a))[0], atol=1e-5)
    np.testing.assert_allclose(got[0, 7:], np.asarray(model(b))[0], atol=1e-5)


PUBLISHED = {"llama-7b": 6.74e9, "llama-13b": 13.0e9, "gpt2-xl": 1.56e9, "smollm2-135m": 134.5e6}


@pytest.mark.parametrize("preset,published", sorted(PUBLISHED.items()))
def test_preset_parameter_counts(preset, published):
    cfg = get_preset(preset)
    assert abs(cfg.num_params() - published) / published <= 0.005
    # The formula counts what the model actually allocates (checked without allocating).
    abstract = nnx.state(nnx.eval_shape(lambda: build_model(cfg)), nnx.Param)
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract)) == cfg.num_params()


def test_flops_per_token_is_6n_plus_attention():
    cfg = get_preset("llama-7b")
    seq = 2048
    n_matmul = cfg.num_params() - cfg.vocab_size * cfg.hidden_size - (2 * cfg.num_layers + 1) * cfg.hidden_size
    attention = 12 * cfg.num_layers * seq * cfg.num_heads * cfg.dim_per_head
    assert cfg.flops_per_token(seq) == pytest.approx(6 * n_matmul + attention, rel=1e-9)
    assert 6 * cfg.num_params() < cfg.flops_per_token(seq) < 8 * cfg.num_params()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_flops_per_token_matches_xla_cost_analysis(arch):
    """The formula's forward third agrees with XLA's count for a matmul-dominated model."""
    base = get_preset("tiny-llama" if arch == "llama" else "tiny-gpt2")
    cfg = base.replace(hidden_size=256, intermediate_size=1024, num_layers=1, num_heads=4,
                       num_kv_heads=None if arch == "gpt2" else 2, vocab_size=2048)
    batch, seq = 2, 128
    graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(cfg)))
    tokens = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    compiled = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, tokens).compile()
    xla_flops = compiled.cost_analysis()["flops"]
    formula = cfg.flops_per_token(seq) / 3 * batch * seq
    assert abs(xla_flops - formula) / formula < 0.05


def test_bfloat16_compute_stays_close_to_float32(llama):
    ids = _ids(llama.cfg, (2, 32), 3)
    fp32 = np.asarray(llama(ids))
    bf16_model = build_model(llama.cfg.replace(dtype="bfloat16"))
    nnx.update(bf16_model, nnx.state(llama))
    bf16 = bf16_model(ids)
    assert bf16.dtype == jnp.float32 and nnx.state(bf16_model, nnx.Param)["final_norm"].get_value().dtype == jnp.float32
    bf16 = np.asarray(bf16)
    assert not np.array_equal(bf16, fp32)  # it really computed in bf16
    assert np.abs(bf16 - fp32).max() <= 0.03 * np.abs(fp32).max()
    assert (bf16.argmax(-1) == fp32.argmax(-1)).mean() >= 0.9


def _grads(model, ids):
    graphdef, state = nnx.split(model)

    def loss(s):
        logp = jax.nn.log_softmax(nnx.merge(graphdef, s)(ids[:, :-1]), axis=-1)
        return -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1).mean()

    return jax.jit(jax.grad(loss))(state).to_pure_dict()


def test_remat_policies_give_identical_gradients(llama):
    """Same gradients up to float32 reassociation (recomputation changes XLA fusions)."""
    ids = _ids(llama.cfg, (2, 16), 4)
    reference = _grads(llama, ids)
    for policy in ("full", "save_dots", "save_dots_no_batch"):
        model = build_model(llama.cfg.replace(remat=policy))
        nnx.update(model, nnx.state(llama))
        grads = _grads(model, ids)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, reference)


def _max_diff_to_dot_product(llama, ids, segments, positions):
    """Largest |logit difference| on real tokens between `llama` ('xla' attention) and the
    same weights with 'dot_product' attention (which computes the full score matrix)."""
    model = build_model(llama.cfg.replace(attention="dot_product"))
    nnx.update(model, nnx.state(llama))
    real = np.asarray(segments) > 0
    got = np.asarray(model(ids, positions=positions, segment_ids=segments))[real]
    expected = np.asarray(llama(ids, positions=positions, segment_ids=segments))[real]
    return np.abs(got - expected).max()


def test_dot_product_attention_equals_xla(llama):
    ids = _ids(llama.cfg, (2, 16), 5)
    segments = jnp.asarray([[1] * 16, [0] * 4 + [1] * 12])
    positions = jnp.maximum(jnp.cumsum(segments > 0, axis=1) - 1, 0)
    assert _max_diff_to_dot_product(llama, ids, segments, positions) <= 1e-5


def test_causal_chunked_attention_equals_full_attention_and_its_gradient():
    from easylm_imitate.models import attention

    rng = np.random.default_rng(0)
    b, t, h, hkv, d = 2, 24, 6, 2, 8
    q, k, v, w = (jnp.asarray(rng.standard_normal(s), jnp.float32)
                  for s in [(b, t, h, d), (b, t, hkv, d), (b, t, hkv, d), (b, t, h, d)])
    segments = jnp.asarray([[1] * 10 + [2] * 14, [0] * 5 + [1] * 19])  # packed; left padding
    slots = jnp.broadcast_to(jnp.arange(t), (b, t))
    mask = attention.attention_mask(slots, slots, segments, segments)
    real = (np.asarray(segments) > 0)[..., None, None]

    def run(fn):
        return jax.value_and_grad(lambda q, k, v: jnp.sum(fn(q, k, v) * w * real), argnums=(0, 1, 2))(q, k, v)

    full = run(lambda q, k, v: attention.attention(q, k, v, mask, "dot_product"))  # JAX's own autodiff
    for chunk in (4, 8):
        chunked = run(lambda q, k, v: attention.causal_self_attention(q, k, v, mask, "xla", chunk=chunk))
        jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5), chunked, full)


def test_long_packed_sequence_matches_unchunked_attention(llama):
    # 256 tokens: the model's default 'xla' path chunks the queries (CAUSAL_CHUNK = 128).
    ids = _ids(llama.cfg, (2, 256), 7)
    segments = jnp.asarray([[1] * 100 + [2] * 156, [0] * 30 + [1] * 226])
    positions = jnp.asarray([list(range(100)) + list(range(156)), [0] * 30 + list(range(226))])
    assert _max_diff_to_dot_product(llama, ids, segments, positions) <= 1e-5
