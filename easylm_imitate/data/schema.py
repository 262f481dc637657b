"""The canonical conversation record shared by data building, collection and training.

A record is a dict::

    {"id": str, "source": str,
     "turns": [{"role": "system" | "user" | "assistant", "text": str}, ...],
     "meta": dict}
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ROLES = ("system", "user", "assistant")


class RecordError(ValueError):
    """A record that does not follow the canonical schema; the message names the field."""


def make_record(id: str, source: str, turns: list[dict], meta: dict | None = None) -> dict:
    """Build and validate a canonical record."""
    return validate_record({"id": id, "source": source, "turns": turns, "meta": dict(meta or {})})


def validate_record(obj: Any) -> dict:
    """Check `obj` against the canonical schema and return it; raise RecordError naming the field."""
    if not isinstance(obj, dict):
        raise RecordError(f"record must be a JSON object, got {type(obj).__name__}")
    for key in ("id", "source", "turns"):
        if key not in obj:
            raise RecordError(f"missing field '{key}'")
    if not isinstance(obj["id"], str) or not obj["id"]:
        raise RecordError("field 'id' must be a non-empty string")
    if not isinstance(obj["source"], str):
        raise RecordError("field 'source' must be a string")
    turns = obj["turns"]
    if not isinstance(turns, list) or not turns:
        raise RecordError("field 'turns' must be a non-empty list")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RecordError(f"turns[{i}] must be an object")
        role = turn.get("role")
        if role not in ROLES:
            raise RecordError(f"turns[{i}].role: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(turn.get("text"), str):
            raise RecordError(f"turns[{i}].text must be a string")
    meta = obj.setdefault("meta", {})
    if not isinstance(meta, dict):
        raise RecordError("field 'meta' must be an object")
    return obj


def record_id(source: str, turns: list[dict]) -> str:
    """A stable content-derived id for a record without one."""
    payload = json.dumps([source, [(t["role"], t["text"]) for t in turns]], ensure_ascii=False)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]
