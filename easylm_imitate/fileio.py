"""Atomic file writes and line-numbered JSONL reading shared by every binary."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from typing import Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary file beside `path`; it replaces `path` only if the block succeeds."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    # O_EXCL like mkstemp, but mode 0666 minus the umask (mkstemp would make it 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        binary = "b" in mode
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write `obj` as JSON to `path` atomically."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False, sort_keys=False)
        f.write("\n")


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write one JSON object per line to `path` atomically; returns the number of lines."""
    n = 0
    with atomic_open(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a plain or .gz text file for reading; undecodable bytes become U+FFFD."""
    path = os.fspath(path)
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


class LineError(ValueError):
    """A bad line in an input file, with the file and 1-based line number."""

    def __init__(self, path: str, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason

    def as_reject(self) -> dict:
        """The rejects-file form of this error."""
        return {"file": self.path, "line": self.line, "reason": self.reason}


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any | LineError]]:
    """Yield (line_number, parsed object or LineError) for each non-blank line of a JSONL file.

    Invalid UTF-8 and invalid JSON are reported per line; reading goes on after them.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, LineError(path, number, f"invalid UTF-8 ({e.reason} at byte {e.start})")
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as e:
                yield number, LineError(path, number, f"invalid JSON ({e.msg} at column {e.colno})")
