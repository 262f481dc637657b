"""Read a pairs file: JSONL of {id, prompt, outputs: {system_name: text, ...}}.

Each good record becomes one `Item` comparing the imitation system (`model`) with the
reference system (the target). Bad records are set aside with file, line and reason.
"""

from __future__ import annotations

import dataclasses
import os

from easylm_imitate.fileio import LineError, iter_jsonl


@dataclasses.dataclass(frozen=True)
class Item:
    """One blind comparison: a prompt and the two systems' outputs."""

    id: str
    prompt: str
    model_output: str
    reference_output: str


@dataclasses.dataclass
class Pairs:
    """The items read from a pairs file, the model name and the rejected lines."""

    items: list[Item]
    model: str | None
    rejects: list[dict]


class PairsError(ValueError):
    """A pairs file that cannot be used at all (missing, or no usable record)."""


def _check_record(obj, reference: str, model: str | None) -> tuple[Item, str]:
    """(item, model name) for a valid record; ValueError naming the field otherwise."""
    if not isinstance(obj, dict):
        raise ValueError(f"record must be a JSON object, got {type(obj).__name__}")
    rid = obj.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or str(rid) == "":
        raise ValueError("field 'id' must be a non-empty string or an integer")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("field 'prompt' must be a non-empty string")
    outputs = obj.get("outputs")
    if not isinstance(outputs, dict):
        raise ValueError("field 'outputs' must be an object {system_name: text}")
    for name, text in outputs.items():
        if not isinstance(text, str):
            raise ValueError(f"field 'outputs.{name}' must be a string")
    if reference not in outputs:
        raise ValueError(f"field 'outputs' has no reference system '{reference}' (has: {sorted(outputs)})")
    if model is None:
        others = sorted(k for k in outputs if k != reference)
        if len(others) != 1:
            raise ValueError(f"field 'outputs' must hold exactly one system besides '{reference}' "
                             f"when no model is named (has: {others}); pass the model name")
        model = others[0]
    elif model not in outputs:
        raise ValueError(f"field 'outputs' has no model system '{model}' (has: {sorted(outputs)})")
    return Item(str(rid), prompt, outputs[model], outputs[reference]), model


def load_pairs(path: str | os.PathLike, reference: str, model: str | None = None) -> Pairs:
    """Read `path`; every record must hold `reference` and `model` (or exactly one other system).

    When `model` is None it is taken from the first good record; later records naming another
    system are rejected. Duplicate ids are rejected after the first.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PairsError(f"{path}: pairs file not found")
    items, rejects, seen = [], [], set()
    for line, obj in iter_jsonl(path):
        if isinstance(obj, LineError):
            rejects.append(obj.as_reject())
            continue
        try:
            item, name = _check_record(obj, reference, model)
            if item.id in seen:
                raise ValueError(f"field 'id': duplicate id {item.id!r}")
        except ValueError as e:
            rejects.append(LineError(path, line, str(e)).as_reject())
            continue
        model = name
        seen.add(item.id)
        items.append(item)
    return Pairs(items, model, rejects)
