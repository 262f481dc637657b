"""Read a prompts file for collection; bad lines are set aside with their line and reason.

Each JSONL line is one of:
- ``{"prompt": "..."}`` or ``{"id": "...", "prompt": "...", "system": "..." (optional), "meta": {...}}``
- a canonical record (``id``, ``source``, ``turns``, ``meta``) whose turns end in a user turn: a
  multi-turn prefix the target is asked to continue.
"""

from __future__ import annotations

import dataclasses

from easylm_imitate.data.schema import RecordError, record_id, validate_record
from easylm_imitate.fileio import LineError, iter_jsonl


@dataclasses.dataclass
class Prompt:
    """A conversation prefix ending in a user turn."""

    id: str
    turns: list[dict]
    meta: dict
    line: int


def _from_simple(obj: dict) -> tuple[str | None, list[dict], dict]:
    prompt = obj["prompt"]
    if not isinstance(prompt, str):
        raise RecordError("field 'prompt' must be a string")
    if not prompt.strip():
        raise RecordError("empty prompt")
    turns = [{"role": "user", "text": prompt}]
    if obj.get("system") is not None:
        if not isinstance(obj["system"], str):
            raise RecordError("field 'system' must be a string")
        turns.insert(0, {"role": "system", "text": obj["system"]})
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise RecordError("field 'meta' must be an object")
    return obj.get("id"), turns, dict(meta)


def _from_record(obj: dict) -> tuple[str, list[dict], dict]:
    record = validate_record(dict(obj))
    turns = record["turns"]
    if turns[-1]["role"] != "user":
        raise RecordError(f"turns must end in a user turn (the last is '{turns[-1]['role']}')")
    if not turns[-1]["text"].strip():
        raise RecordError(f"turns[{len(turns) - 1}].text: empty prompt")
    meta = dict(record["meta"], prompt_source=record["source"])
    return record["id"], [{"role": t["role"], "text": t["text"]} for t in turns], meta


def read_prompts(path: str) -> tuple[list[Prompt], list[dict]]:
    """(prompts, rejects); each reject is {"file", "line", "reason"}."""
    prompts: list[Prompt] = []
    rejects: list[dict] = []
    first_line: dict[str, int] = {}
    for line, obj in iter_jsonl(path):
        try:
            if isinstance(obj, LineError):
                raise obj
            if not isinstance(obj, dict):
                raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
            if "turns" in obj:
                pid, turns, meta = _from_record(obj)
            elif "prompt" in obj:
                pid, turns, meta = _from_simple(obj)
            else:
                raise RecordError("needs a 'prompt' field or a canonical record's 'turns'")
            if pid is None:
                pid = record_id("prompt", turns)
            if not isinstance(pid, str) or not pid:
                raise RecordError("field 'id' must be a non-empty string")
            if pid in first_line:
                raise RecordError(f"duplicate id {pid!r} (first on line {first_line[pid]})")
        except LineError as e:
            rejects.append(e.as_reject())
            continue
        except RecordError as e:
            rejects.append(LineError(path, line, str(e)).as_reject())
            continue
        first_line[pid] = line
        prompts.append(Prompt(pid, turns, meta, line))
    return prompts, rejects
