"""Atomic file writes and line-numbered reading of JSONL (plain or .gz) shared by every binary.

Every reader of input lines goes through `iter_jsonl` (or `iter_raw_lines` / `read_bytes` and
`loads_checked`), so one hostile line or a cut-off compressed file is reported, never fatal.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import uuid
import zlib
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


class LineError(ValueError):
    """A bad line in an input file, with the file, 1-based line number, reason and a short code."""

    def __init__(self, path: str, line: int, reason: str, code: str = "bad_line"):
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason, self.code = path, line, reason, code

    def as_reject(self) -> dict:
        """The rejects-file form of this error."""
        return {"file": self.path, "line": self.line, "reason": self.reason}


class BadJSON(ValueError):
    """JSON text that cannot be used: `code` is invalid_json, too_deep or lone_surrogate."""

    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        self.reason, self.code = reason, code


class TruncatedInput(ValueError):
    """A compressed file that ends early or is damaged; what came before it was read."""


# Deeper JSON is rejected: no chat record nests this far, and deeper values overflow recursive
# code later on (json.dumps, validators) even when json.loads itself copes.
MAX_JSON_DEPTH = 128
_CHUNK = 1 << 20
_CUT_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)
_SURROGATE = re.compile("[\ud800-\udfff]")


def iter_chunks(path: str | os.PathLike, size: int = _CHUNK) -> Iterator[bytes]:
    """The (decompressed) bytes of a plain or .gz file, chunk by chunk.

    A .gz file that ends early or is damaged yields everything decoded before the damage, then
    raises TruncatedInput saying what went wrong.
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        while True:
            try:
                chunk = f.read1(size)  # one decompression step: nothing decoded is lost on an error
            except _CUT_ERRORS as e:
                raise TruncatedInput(f"compressed data ends early or is damaged ({type(e).__name__}: {e})") from None
            if not chunk:
                return
            yield chunk


def read_bytes(path: str | os.PathLike) -> tuple[bytes, str | None]:
    """(every byte of a plain or .gz file that could be decoded, why the rest could not or None)."""
    chunks = []
    try:
        for chunk in iter_chunks(path):
            chunks.append(chunk)
    except TruncatedInput as e:
        return b"".join(chunks), str(e)
    return b"".join(chunks), None


def iter_raw_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes | LineError]]:
    """(1-based line number, line bytes without the newline) for each line of a plain or .gz file.

    When a .gz file ends early or is damaged, the last item is a LineError (code `truncated`)
    at the line the damage cut into; every whole line before it has been yielded.
    """
    path = os.fspath(path)
    number, pending = 0, []  # pieces of the line not yet ended (a long line spans chunks)
    try:
        for chunk in iter_chunks(path):
            lines = chunk.split(b"\n")
            if len(lines) == 1:
                pending.append(chunk)
                continue
            lines[0] = b"".join([*pending, lines[0]])
            pending = [lines.pop()]
            for raw in lines:
                number += 1
                yield number, raw
    except TruncatedInput as e:
        size = sum(map(len, pending))
        lost = f"; the {size} bytes read of this line and anything after are lost" if size else \
            "; anything from this line on is lost"
        yield number + 1, LineError(path, number + 1, f"truncated: {e}{lost}", "truncated")
        return
    last = b"".join(pending)
    if last:
        yield number + 1, last


def json_problem(value: Any, max_depth: int = MAX_JSON_DEPTH) -> BadJSON | None:
    """Why a parsed JSON value cannot be used as text data, or None.

    Too deep: nested more than `max_depth` levels. Lone surrogate: a string holding half of a
    UTF-16 surrogate pair (JSON allows the escape "\\ud800"; UTF-8 cannot encode it, so no
    tokenizer, API request or output file can take it). Iterative: any depth is safe.
    """
    stack = [(value, 1, "")]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, str):
            found = _SURROGATE.search(node)
            if found:
                return BadJSON(f"lone surrogate {ascii(found.group())[1:-1]} in {where or 'the value'} "
                               "(text that cannot be encoded as UTF-8)", "lone_surrogate")
        elif isinstance(node, (dict, list)):
            if depth > max_depth:
                return BadJSON(f"invalid JSON (nested more than {max_depth} levels deep)", "too_deep")
            pairs = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in reversed(list(pairs)):
                if isinstance(key, str):
                    stack.append((key, depth, f"{where}[key {key!r}]"))
                label = f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]"
                stack.append((child, depth + 1, label.lstrip(".")))
    return None


def loads_checked(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads for one input record; BadJSON (with its code) instead of any parse failure,
    for nesting deeper than `max_depth` and for lone surrogates (see `json_problem`)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadJSON(f"invalid JSON ({e.msg} at column {e.colno})", "invalid_json") from None
    except RecursionError:
        raise BadJSON(f"invalid JSON (nested more than {max_depth} levels deep)", "too_deep") from None
    problem = checked_value_problem(text, value, max_depth)
    if problem is not None:
        raise problem
    return value


def checked_value_problem(text: str, value: Any, max_depth: int = MAX_JSON_DEPTH) -> BadJSON | None:
    """`json_problem(value)` for the value parsed from JSON `text` (UTF-8-clean), checking only
    what the text makes possible: most records cost a few C-speed scans of their text."""
    deep = text.count("[") + text.count("{") > max_depth
    if not deep and "\\ud" not in text and "\\uD" not in text:
        return None  # no surrogate escape, so no surrogate: decoded UTF-8 cannot hold one
    if not deep:
        try:  # C speed; surrogate pairs (emoji) are fine, a lone half fails to encode
            json.dumps(value, ensure_ascii=False).encode("utf-8")
            return None
        except (UnicodeEncodeError, RecursionError):
            pass
    return json_problem(value, max_depth)


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any | LineError]]:
    """Yield (line_number, parsed object or LineError) for each non-blank line of a JSONL file.

    Plain or .gz. Invalid UTF-8, invalid JSON, nesting deeper than MAX_JSON_DEPTH and lone
    surrogates are reported per line (LineError.code: invalid_utf8, invalid_json, too_deep,
    lone_surrogate) and reading goes on after them; a .gz file cut off mid-stream yields every
    whole line before the cut and then one `truncated` LineError.
    """
    path = os.fspath(path)
    for number, raw in iter_raw_lines(path):
        if isinstance(raw, LineError):
            yield number, raw
            continue
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield number, LineError(path, number, f"invalid UTF-8 ({e.reason} at byte {e.start})", "invalid_utf8")
            continue
        try:
            yield number, loads_checked(text)
        except BadJSON as e:
            yield number, LineError(path, number, e.reason, e.code)
