"""cuDNN flash attention (GPU, bfloat16/float16) for causal self-attention over packed rows.

`jax.nn.dot_product_attention(implementation="cudnn")` takes a causal mask type and
per-row lengths, but no segment ids: a dense [B,1,T,T] mask would go in as a bias and the
kernel could skip no block. So packed rows use cuDNN's packed ("ragged") layout through
JAX's cuDNN binding (`jax._src.cudnn.fused_attention_stablehlo.dot_product_attention`, what
`jax.nn` calls): every row is cut into runs of equal segment id (padding, id 0, is a run
too, so every token has an output), given as per-row run starts (`q_offsets`) and lengths
(`q_seqlen`), with mask type PADDING_CAUSAL: causal inside each run, nothing across runs.
That equals the dense mask (causal over slots, same segment only) for every real token.

The run count per row is a static bound (`MAX_SEGMENTS`): cuDNN keeps softmax statistics
for B x MAX_SEGMENTS sequences. A batch with a row of more runs takes the fallback, the
same kernel with a causal mask type plus the dense segment mask as a bias, chosen at run
time by `lax.cond` (both are compiled).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Runs (packed examples plus padding) per row the packed layout takes; rows of 2048 tokens
# of the paper's data hold far fewer conversations.
MAX_SEGMENTS = 16


def packed_layout(segments: jax.Array, max_segments: int | None = None):
    """cuDNN packed-layout arguments for rows of segment ids [B,T]: (seqlen [B,M] int32, run
    lengths, -1 past the last run; offsets [B,M+1] int32, run starts, -1 past the last run;
    fits, a bool scalar: whether every row has at most M runs). M: `max_segments`, else
    MAX_SEGMENTS."""
    max_segments = max_segments or MAX_SEGMENTS
    b, t = segments.shape
    starts = jnp.concatenate([jnp.ones((b, 1), bool), segments[:, 1:] != segments[:, :-1]], axis=1)

    def one(row_starts):
        first = jnp.nonzero(row_starts, size=max_segments + 1, fill_value=-1)[0].astype(jnp.int32)
        # A run ends where the next begins (or at T).
        nxt = jnp.concatenate([first[1:], jnp.full((1,), -1, jnp.int32)])
        end = jnp.where(nxt >= 0, nxt, t)
        lengths = jnp.where(first >= 0, end - first, -1)
        return lengths[:max_segments], first.at[max_segments].set(-1)

    seqlen, offsets = jax.vmap(one)(starts)
    fits = jnp.all(jnp.sum(starts, axis=1) <= max_segments)
    return seqlen, offsets, fits


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, segments: jax.Array, dense_mask) -> jax.Array:
    """Causal self-attention of q [B,T,H,D], k/v [B,T,Hkv,D] with segment ids [B,T], on cuDNN.

    `dense_mask()` builds the [B,1,T,T] boolean mask for the fallback (rows of more than
    MAX_SEGMENTS runs)."""
    from jax._src.cudnn import fused_attention_stablehlo as cudnn  # jax.nn's own cuDNN binding

    scale = q.shape[-1] ** -0.5
    seqlen, offsets, fits = packed_layout(segments)

    def packed(q, k, v):
        return cudnn.dot_product_attention(q, k, v, None, None, seqlen, seqlen, offsets, offsets, scale=scale,
                                           mask_type=cudnn.MaskType.PADDING_CAUSAL, qkv_layout="BTNH")

    def dense(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, mask=dense_mask(), scale=scale, is_causal=True,
                                            implementation="cudnn")

    return jax.lax.cond(fits, packed, dense, q, k, v)
