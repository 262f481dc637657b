"""Pallas splash attention (TPU flash attention, jax.experimental.pallas.ops.tpu.splash_attention)
for causal self-attention over packed sequences: a causal block mask plus segment ids, so
the kernel skips every all-masked block and never builds a score matrix in HBM.

Under a mesh the kernel runs inside `shard_map`: batch split as the activations are (over
the mesh axes the sharding rules give `batch`), heads over the tensor-parallel axis when the
head counts divide, so each device runs the kernel on its own rows and heads.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as sa
from jax.sharding import PartitionSpec

from easylm_imitate import parallel

# Splash tiles: the sequence length must be a multiple of BLOCK_MIN; tiles grow to BLOCK_MAX
# (MaxText's default query/key tile for 2048-token training) when the length allows it.
BLOCK_MIN, BLOCK_MAX = 128, 512


def supports_length(t: int) -> bool:
    """Whether the kernel takes `t` tokens (a multiple of its smallest tile)."""
    return t >= BLOCK_MIN and t % BLOCK_MIN == 0


def _block(t: int) -> int:
    """Largest tile <= BLOCK_MAX that divides `t` (a multiple of BLOCK_MIN)."""
    return next(b for b in range(min(BLOCK_MAX, t), BLOCK_MIN - 1, -BLOCK_MIN) if t % b == 0)


def _kernel(t: int, heads: int, interpret: bool):
    """The splash kernel for `heads` query heads over `t` tokens with a causal mask (built at
    trace time: its block tables become constants of the traced program; splash caches the
    numpy mask processing itself)."""
    b = _block(t)
    mask = sa.MultiHeadMask([sa.CausalMask((t, t)) for _ in range(heads)])
    sizes = sa.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b,
                          block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)
    return sa.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _local_attention(qh, kh, vh, segments, interpret: bool):
    """Per-device body: qh [B,H,T,D], kh/vh [B,Hkv,T,D], segments [B,T] -> [B,H,T,D]."""
    kernel = _kernel(qh.shape[2], qh.shape[1], interpret)
    qs = qh * jnp.asarray(qh.shape[-1] ** -0.5, qh.dtype)  # the kernel does not scale
    one = lambda q, k, v, s: kernel(q, k, v, segment_ids=sa.SegmentIds(q=s, kv=s))  # noqa: E731
    return jax.vmap(one)(qs, kh, vh, segments)


def _mesh_specs(mesh, batch: int, heads: int, kv_heads: int) -> PartitionSpec:
    """[B,H,T,D] partitioning under `mesh`: batch over the rules table's batch axes, heads over
    its tensor-parallel axis where both head counts (and the batch) divide."""
    rules = parallel.RULES["fsdp_tp"]
    names = set(mesh.axis_names)
    batch_axes = tuple(a for a in rules["batch"] if a in names)
    shards = 1
    for a in batch_axes:
        shards *= mesh.shape[a]
    head_axis = rules["heads"] if rules["heads"] in names else None
    tp = mesh.shape[head_axis] if head_axis else 1
    if head_axis and (heads % tp or kv_heads % tp):
        head_axis = None
    return PartitionSpec(batch_axes if batch_axes and batch % shards == 0 else None, head_axis, None, None)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, segments: jax.Array,
                     interpret: bool = False) -> jax.Array:
    """Causal self-attention with segment ids: q [B,T,H,D], k/v [B,T,Hkv,D], segments [B,T]
    (tokens attend to earlier tokens of the same segment id; id 0, padding, is a segment
    too, as in the dense mask) -> [B,T,H,D]. `interpret` runs the kernel in the Pallas
    interpreter (any backend; tests)."""
    qh, kh, vh = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    segments = segments.astype(jnp.int32)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        out = _local_attention(qh, kh, vh, segments, interpret)
    else:
        spec = _mesh_specs(mesh, q.shape[0], q.shape[2], k.shape[2])
        body = functools.partial(_local_attention, interpret=interpret)
        out = jax.shard_map(body, mesh=mesh, in_specs=(spec, spec, spec, PartitionSpec(spec[0], None)),
                            out_specs=spec, check_vma=False)(qh, kh, vh, segments)
    return out.transpose(0, 2, 1, 3)
