"""`model.attention`: `auto` resolves by backend, each setting runs the kernel it names, and the
mask object gives the same outputs and gradients as a dense [B,1,Tq,Tk] mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models.attention_helpers import SEGMENTS, dense_mask, inputs, reference, self_mask, value_and_grads

from easylm_imitate.models import attention, cudnn


@pytest.mark.parametrize("backend,dtype,expected", [
    ("tpu", jnp.bfloat16, "splash"), ("tpu", jnp.float32, "splash"),
    ("gpu", jnp.bfloat16, "cudnn"), ("cuda", jnp.float16, "cudnn"), ("gpu", jnp.float32, "xla"),
    ("cpu", jnp.bfloat16, "xla"), ("cpu", jnp.float32, "xla")])
def test_auto_resolves_by_backend_and_dtype(backend, dtype, expected):
    assert attention.resolve_impl("auto", backend, dtype) == expected


@pytest.mark.parametrize("impl,backend,dtype,needs", [
    ("cudnn", "cpu", jnp.bfloat16, "GPU"), ("cudnn", "tpu", jnp.bfloat16, "GPU"),
    ("splash", "cpu", jnp.bfloat16, "TPU"), ("splash", "gpu", jnp.bfloat16, "TPU"),
    ("cudnn", "gpu", jnp.float32, "bfloat16")])
def test_kernel_off_its_backend_is_a_clear_error(impl, backend, dtype, needs):
    with pytest.raises(ValueError, match=rf"model\.attention.*{needs}") as err:
        attention.resolve_impl(impl, backend, dtype)
    assert needs == "bfloat16" or repr(backend) in str(err.value)


def test_named_settings_pass_through_where_they_run():
    assert attention.resolve_impl("splash", "tpu", jnp.float32) == "splash"
    assert attention.resolve_impl("cudnn", "gpu", jnp.bfloat16) == "cudnn"
    for impl in ("xla", "dot_product"):
        assert attention.resolve_impl(impl, "tpu", jnp.float32) == impl


def test_cudnn_on_this_cpu_raises_at_trace_time():
    q, k, v, _ = inputs(jnp.bfloat16)
    mask, _ = self_mask()
    with pytest.raises(ValueError, match=r"model\.attention='cudnn'.*'cpu'"):
        attention.causal_self_attention(q, k, v, mask, "cudnn")


def test_cache_attention_under_a_tpu_mesh_checks_the_mesh_platform(monkeypatch):
    # Compiling for a TPU topology on a CPU host: the mesh's platform decides, not the host.
    monkeypatch.setattr(attention, "current_backend", lambda: "tpu")
    q, k, v, _ = inputs()
    mask, dense = self_mask()
    got = attention.cached_kv_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask, "splash")
    np.testing.assert_allclose(got, reference(q, k, v, dense), atol=2e-5)


@pytest.mark.parametrize("impl", ["xla", "dot_product", "auto"])
def test_self_attention_matches_the_dense_mask_packed_and_padded(impl):
    q, k, v, cot = inputs()
    mask, dense = self_mask()
    got = value_and_grads(lambda q, k, v: attention.causal_self_attention(q, k, v, mask, impl), q, k, v, cot)
    want = value_and_grads(lambda q, k, v: reference(q, k, v, dense), q, k, v, cot)
    for name, g, w in zip(["out", "dq", "dk", "dv"], got, want):
        np.testing.assert_allclose(g, w, atol=3e-5, err_msg=f"{impl} {name}")


@pytest.mark.parametrize("impl", ["xla", "dot_product"])
def test_cached_decode_matches_the_dense_mask(impl):
    # 3 new tokens written at slot 5 of a 16-slot buffer whose row 1 has 2 padding slots first.
    q, k, v, _ = inputs(t=16)
    index = 5
    kv_seg = np.ones((2, 16), np.int32)
    kv_seg[:, index + 3:] = 0  # not yet written
    kv_seg[1, :2] = 0
    q_slots = jnp.broadcast_to(jnp.arange(3) + index, (2, 3))
    kv_slots = jnp.broadcast_to(jnp.arange(16), (2, 16))
    q_seg = jnp.ones((2, 3), jnp.int32)
    mask = attention.attention_mask(q_slots, kv_slots, q_seg, jnp.asarray(kv_seg))
    dense = dense_mask(q_slots, kv_slots, q_seg, jnp.asarray(kv_seg))
    q = q[:, :3]
    got = attention.cached_kv_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask, impl)
    np.testing.assert_allclose(got, reference(q, k, v, dense), atol=2e-5)
    np.testing.assert_array_equal(mask.dense(), dense)


@pytest.mark.parametrize("impl,expected", [("dot_product", "xla"), ("cudnn", "cudnn")])
def test_attention_setting_picks_the_named_implementation(impl, expected, monkeypatch):
    # jax.nn.dot_product_attention's implementation=None means XLA in this JAX (on GPU too),
    # so 'dot_product' must ask for XLA by name and only 'cudnn' may ask for cuDNN.
    seen = []
    real = jax.nn.dot_product_attention

    def recording(*args, implementation=None, **kwargs):
        seen.append(implementation)
        return real(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", recording)
    q = jnp.asarray(np.random.default_rng(0).standard_normal((1, 8, 2, 16)), jnp.float32)
    slots, segments = jnp.arange(8)[None], jnp.ones((1, 8), jnp.int32)
    attention.attention(q, q, q, attention.attention_mask(slots, slots, segments, segments), impl)
    assert seen == [expected]


def test_cudnn_packed_layout_of_known_rows():
    seqlen, offsets, fits = cudnn.packed_layout(jnp.asarray(SEGMENTS), max_segments=4)
    np.testing.assert_array_equal(seqlen, [[90, 60, 80, 26], [200, 56, -1, -1]])
    np.testing.assert_array_equal(offsets, [[0, 90, 150, 230, -1], [0, 200, -1, -1, -1]])
    assert bool(fits)
    assert not bool(cudnn.packed_layout(jnp.asarray(SEGMENTS), max_segments=3)[2])


def packed_reference(q, k, v, bias, mask, q_seqlen, kv_seqlen, q_offsets, kv_offsets, *, scale, mask_type,
                      qkv_layout):
    """What cuDNN computes for the packed layout: causal attention inside each run
    [offset, offset + seqlen), nothing across runs (built from the arguments alone)."""
    assert bias is None and mask is None and qkv_layout == "BTNH"
    assert mask_type.name == "PADDING_CAUSAL" and scale == q.shape[-1] ** -0.5
    t = q.shape[1]
    pos = jnp.arange(t)
    inside = (pos[None, None, :] >= q_offsets[:, :-1, None]) & (
        pos[None, None, :] < (q_offsets[:, :-1] + q_seqlen)[:, :, None]) & (q_seqlen[:, :, None] > 0)
    run = jnp.argmax(inside, axis=1) + jnp.where(inside.any(axis=1), 0, -1000 - pos)  # [B,T]
    dense = (run[:, :, None] == run[:, None, :]) & (pos[:, None] >= pos[None, :])
    return reference(q, k, v, dense[:, None]).astype(q.dtype)


@pytest.mark.parametrize("max_segments", [16, 2])  # 2: row 0 has 4 runs -> the dense-bias fallback
def test_cudnn_arguments_give_the_dense_result(max_segments, monkeypatch):
    # No GPU here: the cuDNN binding is replaced by a reference that reads the same packed
    # arguments, and jax.nn's cuDNN call (the fallback) runs with implementation="xla".
    from jax._src.cudnn import fused_attention_stablehlo

    calls = []
    real = jax.nn.dot_product_attention

    def fallback(*args, implementation=None, is_causal=False, **kwargs):
        calls.append((implementation, is_causal))
        return real(*args, implementation="xla", is_causal=is_causal, **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", fallback)
    monkeypatch.setattr(fused_attention_stablehlo, "dot_product_attention", packed_reference)
    monkeypatch.setattr(cudnn, "MAX_SEGMENTS", max_segments)
    monkeypatch.setattr(attention, "current_backend", lambda: "gpu")
    q, k, v, cot = inputs(jnp.bfloat16)
    mask, dense = self_mask()
    got = value_and_grads(lambda q, k, v: attention.causal_self_attention(q, k, v, mask, "auto"), q, k, v, cot)
    want = value_and_grads(lambda q, k, v: reference(q, k, v, dense).astype(q.dtype), q, k, v, cot)
    real_rows = jnp.asarray(SEGMENTS > 0)[:, :, None, None]
    for name, g, w in zip(["out", "dq", "dk", "dv"], got, want):
        g, w = (jnp.where(real_rows, x, 0).astype(jnp.float32) for x in (g, w))
        np.testing.assert_allclose(g, w, atol=3e-2, rtol=3e-2, err_msg=name)
    assert calls == [("cudnn", True)] * len(calls) and calls  # the fallback is causal cuDNN too
