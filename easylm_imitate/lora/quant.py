"""The frozen base of a QLoRA run, stored quantised and dequantised inside the step.

- `int8`: symmetric, one float32 scale per output channel (absmax over the input axes / 127).
- `nf4`: QLoRA's 4-bit NormalFloat: blocks of up to 64 consecutive values along the last
  input axis, each with a float32 absmax scale; the 16 NF4 levels' indices are packed two
  per byte along that axis (when its size is even), so the stored base is ~0.5 byte/weight
  plus 1/16 for the scales (no double quantisation of the scales).

A `QuantizedArray` is a pytree (codes and scales are its leaves) that remembers the
parameter's logical axes, so the codes and scales shard along the same mesh axes as the
float parameter did.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("int8", "nf4")
NF4_BLOCK = 64
# The 16 NF4 levels (QLoRA, Dettmers et al. 2023, appendix E; as bitsandbytes ships them).
NF4_LEVELS = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], np.float32)


@flax.struct.dataclass
class QuantizedArray:
    """A quantised float parameter: `codes` and `scales` (pytree leaves) plus static layout.

    `axis`: int8: the first of the `in_dims` input axes it reduces over; nf4: the axis its
    blocks (and packed pairs) run along;
    `axes`: the parameter's logical axis names; `shape`: the float parameter's shape."""

    codes: jax.Array
    scales: jax.Array
    kind: str = flax.struct.field(pytree_node=False)
    shape: tuple = flax.struct.field(pytree_node=False)
    axes: tuple = flax.struct.field(pytree_node=False)
    axis: int = flax.struct.field(pytree_node=False)
    in_dims: int = flax.struct.field(pytree_node=False)
    packed: bool = flax.struct.field(pytree_node=False, default=False)

    def part_axes(self) -> tuple[tuple, tuple]:
        """Logical axes of (codes, scales): the parameter's, with int8's reduced input axes unnamed."""
        if self.kind == "int8":
            in_axes = range(self.axis, self.axis + self.in_dims)
            return self.axes, tuple(None if i in in_axes else a for i, a in enumerate(self.axes))
        return self.axes, self.axes

    def dequantize(self, dtype) -> jax.Array:
        """The float parameter (approximately) in `dtype`."""
        if self.kind == "int8":
            return (self.codes.astype(jnp.float32) * self.scales).astype(dtype)
        a, n = self.axis, self.shape[self.axis]
        codes = self.codes
        if self.packed:
            pairs = jnp.stack([codes >> 4, codes & 15], axis=a + 1)
            codes = pairs.reshape(self.shape)
        values = jnp.take(jnp.asarray(NF4_LEVELS), codes.astype(jnp.int32), axis=0)
        block = n // self.scales.shape[a]
        blocked = values.reshape(self.shape[:a] + (n // block, block) + self.shape[a + 1:])
        return (blocked * jnp.expand_dims(self.scales, a + 1)).reshape(self.shape).astype(dtype)

    def unstacked(self) -> "QuantizedArray":
        """One layer of a stacked parameter, as `lax.scan` slices it: codes and scales have
        lost their leading `layers` axis already; this drops it from the static layout too."""
        return self.replace(shape=self.shape[1:], axes=self.axes[1:], axis=self.axis - 1)

    @property
    def nbytes(self) -> int:
        """Bytes held by codes and scales."""
        return int(self.codes.size * self.codes.dtype.itemsize + self.scales.size * self.scales.dtype.itemsize)


def quantize(w: jax.Array, kind: str, axes: tuple, axis: int, in_dims: int) -> QuantizedArray:
    """Quantise float parameter `w` (logical `axes`; input axes `axis`..`axis+in_dims-1`)."""
    if kind not in KINDS:
        raise ValueError(f"lora.base_dtype: unknown quantisation {kind!r} (expected one of {KINDS})")
    w = w.astype(jnp.float32)
    shape = tuple(w.shape)
    if kind == "int8":
        absmax = jnp.max(jnp.abs(w), axis=tuple(range(axis, axis + in_dims)), keepdims=True)
        scales = jnp.where(absmax > 0, absmax / 127.0, 1.0)
        codes = jnp.clip(jnp.round(w / scales), -127, 127).astype(jnp.int8)
        return QuantizedArray(codes, scales, kind, shape, tuple(axes), axis, in_dims)
    axis = axis + in_dims - 1  # nf4 blocks run along the last input axis (e.g. head_dim of `wo`)
    n = shape[axis]
    block = math.gcd(n, NF4_BLOCK)
    blocked = w.reshape(shape[:axis] + (n // block, block) + shape[axis + 1:])
    absmax = jnp.max(jnp.abs(blocked), axis=axis + 1, keepdims=True)
    absmax = jnp.where(absmax > 0, absmax, 1.0)
    midpoints = jnp.asarray((NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2)
    codes = jnp.searchsorted(midpoints, blocked / absmax).astype(jnp.uint8).reshape(shape)
    packed = n % 2 == 0
    if packed:
        pairs = codes.reshape(shape[:axis] + (n // 2, 2) + shape[axis + 1:])
        codes = (jnp.take(pairs, 0, axis=axis + 1) << 4) | jnp.take(pairs, 1, axis=axis + 1)
    return QuantizedArray(codes, jnp.squeeze(absmax, axis + 1), kind, shape, tuple(axes), axis, in_dims, packed)


def is_quantized(x) -> bool:
    """Whether `x` is a QuantizedArray (for tree maps that treat it as one leaf)."""
    return isinstance(x, QuantizedArray)
