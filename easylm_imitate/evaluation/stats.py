"""Means and standard errors of per-example scores."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for an empty sequence."""
    return float(sum(values) / len(values)) if len(values) else float("nan")


def stderr_of_mean(values: Sequence[float]) -> float:
    """Standard error of the mean with the sample (n-1) standard deviation; NaN if n < 2."""
    n = len(values)
    if n < 2:
        return float("nan")
    m = sum(values) / n
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation coefficient; NaN when either side has no variance or n < 2."""
    if len(xs) != len(ys):
        raise ValueError(f"pearson: lengths differ ({len(xs)} vs {len(ys)})")
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return float("nan")
    return sxy / math.sqrt(sxx * syy)
