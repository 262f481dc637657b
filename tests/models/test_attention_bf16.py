"""bfloat16 training attention: the query-chunked backward pass is as accurate as the whole one."""

import jax
import jax.numpy as jnp
import numpy as np

from easylm_imitate.models import attention

# 256 tokens in 8 query chunks: the keys of the first chunk collect gradient from all 8, so
# summing the chunks' dK/dV in bfloat16 shows (~1.4x the error of the unchunked path here).
T, CHUNK = 256, 32


def _relative_error(got, expected) -> float:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


def _grads(fn, q, k, v, cotangent):
    """d/d(q, k, v) of <fn(q, k, v), cotangent>, with the output taken to float32."""
    loss = lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * cotangent)  # noqa: E731
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)


def test_chunked_bf16_gradients_are_no_worse_than_unchunked():
    rng = np.random.default_rng(0)
    q, k, v, cotangent = (jnp.asarray(rng.standard_normal(s), jnp.float32)
                          for s in [(1, T, 4, 64), (1, T, 2, 64), (1, T, 2, 64), (1, T, 4, 64)])
    slots = jnp.arange(T)[None]
    segments = jnp.ones((1, T), jnp.int32)
    mask = attention.attention_mask(slots, slots, segments, segments)
    whole = lambda q, k, v: attention.attention(q, k, v, mask, "xla")  # noqa: E731
    chunked = lambda q, k, v: attention.causal_self_attention(q, k, v, mask, "xla", chunk=CHUNK)  # noqa: E731

    reference = _grads(whole, q, k, v, cotangent)  # float32
    bf16 = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    for name, c, w, r in zip("qkv", _grads(chunked, *bf16, cotangent), _grads(whole, *bf16, cotangent), reference):
        assert c.dtype == jnp.bfloat16
        chunked_error, whole_error = _relative_error(c, r), _relative_error(w, r)
        assert whole_error < 1e-2, (name, whole_error)  # bfloat16 precision, not a wrong gradient
        assert chunked_error <= 1.05 * whole_error, (f"d{name}", chunked_error, whole_error)


def test_splash_bf16_gradients_are_no_worse_than_autodiff_of_plain_attention():
    # The TPU kernel, run by the Pallas interpreter: its bfloat16 gradients against JAX
    # autodiff of plain softmax attention in bfloat16, both measured from float32.
    from easylm_imitate.models import splash

    rng = np.random.default_rng(1)
    q, k, v, cotangent = (jnp.asarray(rng.standard_normal(s), jnp.float32)
                          for s in [(1, T, 4, 64), (1, T, 2, 64), (1, T, 2, 64), (1, T, 4, 64)])
    segments = jnp.asarray(np.repeat([1, 2], T // 2)[None], jnp.int32)  # two packed examples
    slots = jnp.arange(T)[None]
    mask = attention.attention_mask(slots, slots, segments, segments).dense()

    def plain(q, k, v):
        kk, vv = (jnp.repeat(x, 2, axis=2) for x in (k, v))
        s = jnp.einsum("bqhd,bkhd->bhqk", q, kk) * q.shape[-1] ** -0.5
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(jnp.where(mask, s, -1e30), axis=-1).astype(vv.dtype), vv)

    kernel = lambda q, k, v: splash.causal_attention(q, k, v, segments, interpret=True)  # noqa: E731
    reference = _grads(plain, q, k, v, cotangent)  # float32
    bf16 = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    for name, s, p, r in zip("qkv", _grads(kernel, *bf16, cotangent), _grads(plain, *bf16, cotangent), reference):
        assert s.dtype == jnp.bfloat16
        splash_error, plain_error = _relative_error(s, r), _relative_error(p, r)
        assert splash_error <= 1.05 * plain_error, (f"d{name}", splash_error, plain_error)
