"""`model.attention` names the kernel that runs: JAX never swaps cuDNN in by itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from easylm_imitate.models import attention


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
