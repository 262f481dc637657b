"""Source readers: files (JSON array, JSONL, plain or .gz), Hugging Face `datasets` and TFDS
data sources, and the per-format conversion of a raw row into canonical records.

Reading and converting are separate: a reader yields `Item`s (file, line, raw object or the
reason it could not be read); `convert(kind, obj, options)` turns one raw object into zero
or more canonical records, or raises `ConvertError` with the reason. Nothing here drops a
row silently: every row becomes records or a reason.

Formats (`kind`):
- `sharegpt`: `{"id", "conversations": [{"from", "value"}, ...]}` (a JSON array, possibly
  truncated mid-record, or JSONL).
- `hc3`: `{"question", "human_answers", "chatgpt_answers"}`: one record per ChatGPT answer.
- `pairs`: input/output pairs (Discord bot logs); field names are options (dotted paths).
- `messages`: OpenAI chat `{"messages": [{"role", "content"}, ...]}`.
- `alpaca`: `{"instruction", "input", "output"}`.
- `canonical`: records already in the canonical schema.

Paths: a local file, `hf:NAME_OR_DIR` (`datasets.load_dataset`, or `load_from_disk` for a
directory written by `save_to_disk`), or `tfds:NAME_OR_DIR` (`tfds.data_source`, or a
prepared builder directory).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from typing import Any

from easylm_imitate.data.schema import RecordError, validate_record
from easylm_imitate.fileio import (MAX_JSON_DEPTH, LineError, TruncatedInput, checked_value_problem, iter_chunks,
                                   iter_jsonl, read_bytes)

KINDS = ("sharegpt", "hc3", "pairs", "messages", "alpaca", "canonical")

ROLE_ALIASES = {
    "human": "user", "user": "user", "prompter": "user", "question": "user",
    "gpt": "assistant", "chatgpt": "assistant", "assistant": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant", "bot": "assistant", "ai": "assistant", "answer": "assistant",
    "system": "system", "developer": "system",
}


class ConvertError(ValueError):
    """A raw row that cannot become a canonical record; `code` is the drop category."""

    def __init__(self, reason: str, code: str = "bad_record"):
        super().__init__(reason)
        self.reason, self.code = reason, code


@dataclasses.dataclass
class Item:
    """One raw row of a source: its origin and the parsed object, or why it has none."""

    file: str
    line: int
    obj: Any = None
    error: str | None = None
    code: str | None = None


@dataclasses.dataclass
class ReadOptions:
    """How to read and convert one source."""

    kind: str
    split: str = "train"
    hf_config: str = ""
    tfds_data_dir: str = ""
    input_field: str = "input"
    output_field: str = "output"
    id_field: str = ""
    system_field: str = ""
    max_items: int = 0
    max_turn_chars: int = 100_000


# ---------------------------------------------------------------- reading


def iter_items(path: str, options: ReadOptions) -> Iterator[Item]:
    """Raw items of a source, at most `options.max_items` of them (0 = all)."""
    if path.startswith("hf:"):
        items = _iter_hf(path[3:], options)
    elif path.startswith("tfds:"):
        items = _iter_tfds(path[5:], options)
    else:
        items = iter_file(path)
    for n, item in enumerate(items, start=1):
        yield item
        if options.max_items and n >= options.max_items:
            return


def _first_char(path: str) -> str:
    try:
        for chunk in iter_chunks(path, 4096):
            stripped = chunk.lstrip(b"\xef\xbb\xbf \t\r\n")
            if stripped:
                return chr(stripped[0])
    except TruncatedInput:
        pass
    return ""


def iter_file(path: str) -> Iterator[Item]:
    """Items of a local JSON-array or JSONL file (plain or .gz)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: input file not found")
    if _first_char(path) == "[":
        yield from _iter_json_array(path)
        return
    for line, obj in iter_jsonl(path):
        if isinstance(obj, LineError):
            yield Item(path, line, error=obj.reason, code=obj.code)
        else:
            yield Item(path, line, obj)


_SKIP = re.compile(r"[\s,]*")
_SURROGATE = re.compile("[\udc80-\udcff]")


def _iter_json_array(path: str) -> Iterator[Item]:
    """Elements of a (possibly truncated or damaged) JSON array, decoded one at a time.

    Invalid UTF-8 bytes, nesting deeper than MAX_JSON_DEPTH and lone surrogates reject only the
    element that holds them. After a malformed element, reading resumes at the next line
    indented like the first element; a file cut off mid-element (or a .gz file whose compressed
    data ends early) yields its complete elements and one `truncated` item for the rest.
    """
    data, cut = read_bytes(path)
    text = data.decode("utf-8", errors="surrogateescape")
    has_bad_bytes = _SURROGATE.search(text) is not None
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1 if "[" in text else len(text)
    line, counted = 1 + text.count("\n", 0, pos), pos
    indent = None
    while True:
        pos = _SKIP.match(text, pos).end()
        line += text.count("\n", counted, pos)
        counted = pos
        if pos >= len(text) or text[pos] == "]":
            if cut is not None:
                yield Item(path, line, error=f"truncated: {cut}", code="truncated")
            return
        if indent is None:
            indent = pos - (text.rfind("\n", 0, pos) + 1)
        try:
            obj, end = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError) as e:
            deep = isinstance(e, RecursionError)
            resume = _resync(text, pos + 1 if deep else e.pos, indent)
            what = f"nested more than {MAX_JSON_DEPTH} levels deep" if deep else e.msg
            code = "too_deep" if deep else "invalid_json"
            if resume is None and (deep or text.rstrip().endswith("]")):
                yield Item(path, line, error=f"invalid JSON ({what}) in the last record", code=code)
                return
            if resume is None:
                why = cut or "incomplete record at end of file"
                yield Item(path, line, error=f"truncated: {why} ({len(text) - pos} characters from line {line} on "
                                             "are lost)", code="truncated")
                return
            skipped = text.count("\n", pos, resume)
            yield Item(path, line, error=f"invalid JSON ({what}); skipped {skipped} lines", code=code)
            pos = resume
            continue
        if has_bad_bytes and _SURROGATE.search(text, pos, end):
            yield Item(path, line, error="invalid UTF-8 in record", code="invalid_utf8")
        elif (problem := checked_value_problem(text[pos:end], obj)) is not None:
            yield Item(path, line, error=problem.reason, code=problem.code)
        else:
            yield Item(path, line, obj)
        pos = end


def _resync(text: str, start: int, indent: int) -> int | None:
    """Start of the next element-level `{` line after `start`, or None if there is none."""
    pattern = re.compile(r"\n" + (r"[ \t]{%d}" % indent if indent else "") + r"\{")
    match = pattern.search(text, start)
    while match:
        brace = match.end() - 1
        try:
            json.JSONDecoder().raw_decode(text, brace)
            return brace
        except (json.JSONDecodeError, RecursionError):
            match = pattern.search(text, brace + 1)
    return None


def _iter_hf(spec: str, options: ReadOptions) -> Iterator[Item]:
    """Rows of a Hugging Face dataset (hub name or a `save_to_disk` directory)."""
    import datasets

    if os.path.isdir(spec):
        ds = datasets.load_from_disk(spec)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[options.split]
    else:
        ds = datasets.load_dataset(spec, options.hf_config or None, split=options.split)
    origin = f"hf:{spec}[{options.split}]"
    for i, row in enumerate(ds, start=1):
        yield Item(origin, i, row)


def _iter_tfds(spec: str, options: ReadOptions) -> Iterator[Item]:
    """Rows of a TFDS data source (registered name, or a prepared builder directory)."""
    import tensorflow_datasets as tfds

    if os.path.isdir(spec):
        source = tfds.builder_from_directory(spec).as_data_source(split=options.split)
    else:
        source = tfds.data_source(spec, split=options.split, data_dir=options.tfds_data_dir or None)
    origin = f"tfds:{spec}[{options.split}]"
    for i in range(len(source)):
        try:
            yield Item(origin, i + 1, _decode_tfds(source[i]))
        except UnicodeDecodeError as e:
            yield Item(origin, i + 1, error=f"invalid UTF-8 ({e.reason})", code="invalid_utf8")


def _decode_tfds(value: Any) -> Any:
    """TFDS rows hold bytes and numpy arrays; make them JSON-like."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _decode_tfds(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return _decode_tfds(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_decode_tfds(v) for v in value]
    return value


# ---------------------------------------------------------------- converting


def normalize_role(raw: Any) -> str:
    """Canonical role for a source role name; ConvertError(unknown_role) if it has none."""
    role = ROLE_ALIASES.get(raw.strip().lower()) if isinstance(raw, str) else None
    if role is None:
        raise ConvertError(f"unknown role {raw!r}", "unknown_role")
    return role


def _field(obj: dict, path: str) -> Any:
    node = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConvertError(f"missing field {path!r}", "missing_field")
        node = node[part]
    return node


def _string(value: Any, where: str) -> str:
    if value is None:
        raise ConvertError(f"{where}: missing value", "missing_field")
    if not isinstance(value, str):
        raise ConvertError(f"{where}: expected a string, got {type(value).__name__}", "bad_record")
    return value


def _as_list_of_dicts(value: Any, where: str) -> list[dict]:
    """A list of dicts, also from the dict-of-lists form of Arrow/TFDS sequence features."""
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        keys = list(value)
        value = [dict(zip(keys, row)) for row in zip(*value.values())]
    if not isinstance(value, list):
        raise ConvertError(f"{where} must be a list", "bad_record")
    return value


def _raw_id(obj: dict, *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key) if key else None
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _sharegpt(obj: dict, options: ReadOptions) -> list[tuple[str | None, list[dict], dict]]:
    convs = obj.get("conversations", obj.get("conversation", obj.get("items")))
    if convs is None:
        raise ConvertError("missing field 'conversations'", "missing_field")
    turns = []
    for i, turn in enumerate(_as_list_of_dicts(convs, "conversations")):
        if not isinstance(turn, dict):
            raise ConvertError(f"conversations[{i}] must be an object", "bad_record")
        if "value" not in turn:
            raise ConvertError(f"conversations[{i}]: missing 'value'", "missing_field")
        role = normalize_role(turn.get("from", turn.get("role")))
        turns.append({"role": role, "text": _string(turn["value"], f"conversations[{i}].value")})
    return [(_raw_id(obj, "id"), turns, {})]


def _hc3(obj: dict, options: ReadOptions) -> list[tuple[str | None, list[dict], dict]]:
    question = _string(_field(obj, "question"), "question")
    answers = obj.get("chatgpt_answers")
    if answers is None:
        raise ConvertError("missing field 'chatgpt_answers'", "missing_field")
    if not isinstance(answers, list):
        raise ConvertError("chatgpt_answers must be a list", "bad_record")
    base = _raw_id(obj, "id", "index")
    out = []
    for k, answer in enumerate(answers):
        text = _string(answer, f"chatgpt_answers[{k}]")
        meta = {"answer": k}
        if isinstance(obj.get("source"), str):
            meta["hc3_source"] = obj["source"]
        out.append((f"{base}-{k}" if base is not None else None,
                    [{"role": "user", "text": question}, {"role": "assistant", "text": text}], meta))
    if not out:
        raise ConvertError("no ChatGPT answers", "no_exchange")
    return out


def _pairs(obj: dict, options: ReadOptions) -> list[tuple[str | None, list[dict], dict]]:
    turns = []
    if options.system_field:
        system = obj.get(options.system_field)
        if isinstance(system, str) and system.strip():
            turns.append({"role": "system", "text": system})
    turns.append({"role": "user", "text": _string(_field(obj, options.input_field), options.input_field)})
    turns.append({"role": "assistant", "text": _string(_field(obj, options.output_field), options.output_field)})
    return [(_raw_id(obj, options.id_field or "id"), turns, {})]


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise ConvertError(f"{where}: only text content parts are supported", "bad_record")
            parts.append(part["text"])
        return "".join(parts)
    return _string(content, where)


def _messages(obj: dict, options: ReadOptions) -> list[tuple[str | None, list[dict], dict]]:
    messages = obj.get("messages")
    if messages is None:
        raise ConvertError("missing field 'messages'", "missing_field")
    turns = []
    for i, message in enumerate(_as_list_of_dicts(messages, "messages")):
        if not isinstance(message, dict):
            raise ConvertError(f"messages[{i}] must be an object", "bad_record")
        role = normalize_role(message.get("role"))
        if "content" not in message:
            raise ConvertError(f"messages[{i}]: missing 'content'", "missing_field")
        turns.append({"role": role, "text": _content_text(message["content"], f"messages[{i}].content")})
    return [(_raw_id(obj, "id"), turns, {})]


def _alpaca(obj: dict, options: ReadOptions) -> list[tuple[str | None, list[dict], dict]]:
    instruction = _string(_field(obj, "instruction"), "instruction")
    extra = obj.get("input") or ""
    if not isinstance(extra, str):
        raise ConvertError("input: expected a string", "bad_record")
    query = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    output = _string(_field(obj, "output"), "output")
    return [(_raw_id(obj, "id"), [{"role": "user", "text": query}, {"role": "assistant", "text": output}], {})]


def _canonical(obj: dict, options: ReadOptions) -> list[tuple[str | None, list[dict], dict]]:
    try:
        record = validate_record(dict(obj, source=obj.get("source", "")))
    except RecordError as e:
        code = "unknown_role" if "unknown role" in str(e) else "bad_record"
        raise ConvertError(str(e), code) from None
    turns = [{"role": t["role"], "text": t["text"]} for t in record["turns"]]
    return [(record["id"], turns, dict(record.get("meta") or {}))]


CONVERTERS = {"sharegpt": _sharegpt, "hc3": _hc3, "pairs": _pairs, "messages": _messages,
              "alpaca": _alpaca, "canonical": _canonical}


def convert(obj: Any, options: ReadOptions) -> list[tuple[str | None, list[dict], dict]]:
    """(raw id or None, canonical turns, extra meta) for each record in one raw row."""
    if options.kind not in CONVERTERS:
        raise ValueError(f"unknown source kind {options.kind!r} (expected one of {', '.join(KINDS)})")
    if not isinstance(obj, dict):
        raise ConvertError(f"record must be a JSON object, got {type(obj).__name__}", "bad_record")
    out = CONVERTERS[options.kind](obj, options)
    for _, turns, _ in out:
        for i, turn in enumerate(turns):
            if options.max_turn_chars and len(turn["text"]) > options.max_turn_chars:
                raise ConvertError(f"turn {i} has {len(turn['text'])} characters "
                                   f"(max_turn_chars={options.max_turn_chars})", "turn_too_long")
    return out
