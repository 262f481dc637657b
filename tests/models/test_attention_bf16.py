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
