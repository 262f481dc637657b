"""The results file every evaluation writes: one JSON object per run.

Schema::

    {"benchmark": str, "model": str, "settings": dict,
     "metrics": {name: number}, "n": int,
     "stderr": {metric: number} | number | null,
     "timestamp": ISO 8601 str,
     # optional, used by the report's plots:
     "base_model": str, "imitation_tokens": number, "base_params": number,
     # optional, written by the crowd-rating app:
     "reference": str,
     # optional: a run that must not be read as a result (absent means "ok"):
     "status": "ok" | "failed", "failure": str (why; required when failed),
     "failed_items": int (items that failed and are not in n)}

A failed record may have empty `metrics` (nothing was scored).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from typing import Any

from easylm_imitate.fileio import write_json_atomic

REQUIRED = ("benchmark", "model", "settings", "metrics", "n", "stderr", "timestamp")
OPTIONAL_NUMBERS = ("imitation_tokens", "base_params")
OPTIONAL_STRINGS = ("base_model", "reference")
STATUSES = ("ok", "failed")


class ResultsError(ValueError):
    """A results file that does not follow the schema; the message names the file and field."""


class NothingScored(ValueError):
    """An evaluation found no item to score (empty input, no matching ids, every item failed)."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def now_iso() -> str:
    """The current UTC time in ISO 8601 with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_failed(record: dict) -> bool:
    """True when `record` is marked failed (see the schema's `status`)."""
    return record.get("status") == "failed"


def make_results(benchmark: str, model: str, settings: dict, metrics: dict, n: int,
                 stderr: dict | float | None = None, **optional: Any) -> dict:
    """Build a validated results record; `optional` holds base_model, imitation_tokens, ...."""
    record = {"benchmark": benchmark, "model": model, "settings": dict(settings),
              "metrics": dict(metrics), "n": int(n), "stderr": stderr, "timestamp": now_iso()}
    record.update({k: v for k, v in optional.items() if v is not None})
    return validate_results(record)


def mark_failed(record: dict, reason: str, failed_items: int | None = None) -> dict:
    """Mark `record` failed with `reason` (and how many items failed); returns it."""
    record["status"], record["failure"] = "failed", reason
    if failed_items is not None:
        record["failed_items"] = int(failed_items)
    return record


def make_failed_results(benchmark: str, model: str, settings: dict, reason: str, **optional: Any) -> dict:
    """A validated record for a run that scored nothing: n=0, no metrics, marked failed."""
    record = {"benchmark": benchmark, "model": model, "settings": dict(settings), "metrics": {}, "n": 0,
              "stderr": None, "timestamp": now_iso()}
    record.update({k: v for k, v in optional.items() if v is not None})
    return validate_results(mark_failed(record, reason))


def validate_results(obj: Any, where: str = "results") -> dict:
    """Check `obj` against the schema and return it; raise ResultsError naming the field."""
    if not isinstance(obj, dict):
        raise ResultsError(f"{where}: must be a JSON object, got {type(obj).__name__}")
    for key in REQUIRED:
        if key not in obj:
            raise ResultsError(f"{where}: missing field '{key}'")
    for key in ("benchmark", "model", "timestamp"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise ResultsError(f"{where}: field '{key}' must be a non-empty string")
    try:
        _dt.datetime.fromisoformat(obj["timestamp"])
    except ValueError:
        raise ResultsError(f"{where}: field 'timestamp' is not ISO 8601: {obj['timestamp']!r}") from None
    if not isinstance(obj["settings"], dict):
        raise ResultsError(f"{where}: field 'settings' must be an object")
    status = obj.get("status", "ok")
    if status not in STATUSES:
        raise ResultsError(f"{where}: field 'status' must be one of {', '.join(STATUSES)}, got {status!r}")
    if status == "failed" and not (isinstance(obj.get("failure"), str) and obj["failure"]):
        raise ResultsError(f"{where}: a failed record needs a non-empty string field 'failure'")
    if "failure" in obj and not isinstance(obj["failure"], str):
        raise ResultsError(f"{where}: field 'failure' must be a string")
    if "failed_items" in obj and (not isinstance(obj["failed_items"], int) or isinstance(obj["failed_items"], bool)
                                  or obj["failed_items"] < 0):
        raise ResultsError(f"{where}: field 'failed_items' must be a non-negative integer")
    metrics = obj["metrics"]
    if not isinstance(metrics, dict) or (not metrics and status != "failed"):
        raise ResultsError(f"{where}: field 'metrics' must be a non-empty object")
    for name, value in metrics.items():
        if not (_is_number(value) or value is None):
            raise ResultsError(f"{where}: metrics.{name} must be a number or null, got {value!r}")
    if not isinstance(obj["n"], int) or isinstance(obj["n"], bool) or obj["n"] < 0:
        raise ResultsError(f"{where}: field 'n' must be a non-negative integer")
    stderr = obj["stderr"]
    if isinstance(stderr, dict):
        for name, value in stderr.items():
            if not (_is_number(value) or value is None):
                raise ResultsError(f"{where}: stderr.{name} must be a number or null, got {value!r}")
    elif not (stderr is None or _is_number(stderr)):
        raise ResultsError(f"{where}: field 'stderr' must be an object, a number or null")
    for key in OPTIONAL_NUMBERS:
        if key in obj and not _is_number(obj[key]):
            raise ResultsError(f"{where}: field '{key}' must be a number")
    for key in OPTIONAL_STRINGS:
        if key in obj and not isinstance(obj[key], str):
            raise ResultsError(f"{where}: field '{key}' must be a string")
    return obj


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _json_safe(x.item())
    return x


def write_results(path: str | os.PathLike, record: dict) -> None:
    """Validate `record` and write it to `path` atomically (NaN/inf become null)."""
    record = _json_safe(record)
    validate_results(record, where=os.fspath(path))
    write_json_atomic(path, record)


def read_results(path: str | os.PathLike) -> dict:
    """Read and validate one results file; ResultsError names the file and field."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    return validate_results(obj, where=path)
