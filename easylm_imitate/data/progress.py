"""Progress bars for the stages of a dataset build: tqdm on stderr, or none.

A `Progress` is `progress(desc, total=None, unit="conv") -> bar`, where a bar is a context
manager with `update(n=1)` (a tqdm bar). Library calls default to `no_bars`; the build binary
passes `stderr_bars`, so a long build shows which stage it is in and how far it got.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
Progress = Callable[..., tqdm]


def no_bars(desc: str = "", total: int | None = None, unit: str = "conv") -> tqdm:
    """A bar that shows nothing."""
    return tqdm(disable=True)


def stderr_bars(desc: str, total: int | None = None, unit: str = "conv") -> tqdm:
    """A tqdm bar on stderr, redrawn at most once a second, left in place when done."""
    return tqdm(desc=desc, total=total, unit=unit, file=sys.stderr, mininterval=1.0, dynamic_ncols=True,
                leave=True)


def track(items: Iterable[T], progress: Progress, desc: str, total: int | None = None,
          unit: str = "conv") -> Iterator[T]:
    """Yield `items`, counting each one on a bar (total: `len(items)` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with progress(desc, total, unit) as bar:
        for item in items:
            yield item
            bar.update()
