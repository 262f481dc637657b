"""Integrity of training checkpoints: per-leaf checksums written at save and compared on
restore, a finiteness check of every leaf, and a fingerprint of the training data.

A leaf's checksum is two wrapping uint32 sums over its raw bits (a plain sum and one weighted
by each element's odd position number), computed on device under the leaf's own sharding,
so it costs one pass over the state and is the same on any mesh or device count. Any single
flipped bit changes both sums.
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np


class NonFiniteError(RuntimeError):
    """A loss, gradient norm or parameter that is NaN or infinite."""


class IntegrityError(ValueError):
    """Restored state that is not what was saved (checksum mismatch, NaN/inf, wrong position)."""


def _bits(x: jax.Array) -> jax.Array:
    """The raw bits of `x` as uint32 (one element per element; 8-byte types gain a trailing 2)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = jnp.dtype(x.dtype).itemsize
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _leaf_sums(x: jax.Array) -> jax.Array:
    """[plain sum, position-weighted sum] of the bits of `x`, wrapping uint32."""
    bits = _bits(x)
    index = jnp.zeros(bits.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(bits.ndim)):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, axis) * jnp.uint32(stride % 2 ** 32)
        stride *= bits.shape[axis]
    weighted = bits * (index * jnp.uint32(2) + jnp.uint32(1))
    return jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(weighted, dtype=jnp.uint32)])


def _leaf_finite(x: jax.Array) -> jax.Array:
    """Whether every element of `x` is finite (always true for integer leaves)."""
    return jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)


_digests = jax.jit(lambda tree: (jax.tree.map(_leaf_sums, tree), jax.tree.map(_leaf_finite, tree)))


def _fetch(tree):
    """Host copy of small (possibly multi-process) results."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def tree_digest(tree) -> tuple[dict[str, str], list[str]]:
    """({leaf path: checksum hex}, paths of leaves holding NaN or inf) of an array tree."""
    sums, finite = _fetch(_digests(tree))
    checksums, nonfinite = {}, []
    flat_finite = jax.tree_util.tree_leaves(finite)
    for (path, s), ok in zip(jax.tree_util.tree_flatten_with_path(sums)[0], flat_finite):
        key = jax.tree_util.keystr(path)
        checksums[key] = f"{int(s[0]):08x}{int(s[1]):08x}"
        if not bool(ok):
            nonfinite.append(key)
    return checksums, nonfinite


def _some(paths: list[str], limit: int = 3) -> str:
    """`a, b, c (and N more)` for an error message."""
    more = f" (and {len(paths) - limit} more)" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def state_digests(items: dict) -> dict[str, dict[str, str]]:
    """Checksums of each named tree (e.g. params, opt_state); NonFiniteError if any leaf is
    NaN or infinite, so non-finite state is never written."""
    result = {}
    for name, tree in items.items():
        checksums, nonfinite = tree_digest(tree)
        if nonfinite:
            raise NonFiniteError(f"non-finite values in {name}: {_some(nonfinite)}")
        result[name] = checksums
    return result


def verify_digests(items: dict, expected: dict | None) -> None:
    """Raise IntegrityError naming the first leaves whose restored values are non-finite or whose
    checksum differs from the one written at save (`expected`; None: finiteness only)."""
    for name, tree in items.items():
        checksums, nonfinite = tree_digest(tree)
        if nonfinite:
            raise IntegrityError(f"non-finite values in {name}: {_some(nonfinite)}")
        want = (expected or {}).get(name)
        if want is None:
            continue
        if set(want) != set(checksums):
            raise IntegrityError(f"{name}: the saved checksums list other leaves than the checkpoint holds")
        bad = [k for k in checksums if checksums[k] != want[k]]
        if bad:
            raise IntegrityError(f"checksum mismatch in {name}: {_some(bad)} (the files were changed after the save)")


def data_fingerprint(rows: dict[str, np.ndarray], seed: int) -> str:
    """sha256 (hex, 16 chars) of the packed training rows and the shuffle seed: a resumed run
    must see the same data for its saved position to mean the same batches."""
    h = hashlib.sha256(f"seed={seed}".encode())
    for name in sorted(rows):
        arr = np.ascontiguousarray(rows[name])
        h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()[:16]
