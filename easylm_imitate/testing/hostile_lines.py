"""Hostile input lines for tests and fault probes: a very deeply nested JSON value, a string with
a lone UTF-16 surrogate, and a gzip file cut off mid-stream."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Sequence

__all__ = ["complete_lines_before_cut", "lone_surrogate_line", "nested_json_line", "write_truncated_gz"]


def nested_json_line(depth: int = 100_000, field: str = "conversations", **fields) -> str:
    """One JSON object line whose `field` holds `depth` nested lists (json.loads: RecursionError)."""
    head = json.dumps(fields)[:-1] + (", " if fields else "")
    return f'{head}"{field}": ' + "[" * depth + "]" * depth + "}"


def lone_surrogate_line(obj: dict) -> str:
    """`obj` as one JSON line with ASCII escapes, so a lone surrogate such as "x\\ud800y" stays a
    `\\ud800` escape: valid JSON whose string cannot be encoded as UTF-8."""
    return json.dumps(obj, ensure_ascii=True)


def write_truncated_gz(path: str | os.PathLike, lines: Sequence[str], keep: float = 0.5) -> int:
    """Gzip `lines` (one per line) into `path`, cut after `keep` of the compressed bytes.

    Returns how many whole lines a reader can still recover before the cut.
    """
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    compressed = gzip.compress(data, mtime=0)
    cut = compressed[:max(20, int(len(compressed) * keep))]
    with open(path, "wb") as f:
        f.write(cut)
    return complete_lines_before_cut(cut)


def complete_lines_before_cut(cut: bytes) -> int:
    """Number of newline-terminated lines a gzip prefix decompresses to."""
    return zlib.decompressobj(wbits=31).decompress(cut).count(b"\n")
