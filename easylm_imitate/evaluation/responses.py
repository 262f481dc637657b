"""Prompts with replies: the input of the judge and the style measures.

A responses file is JSONL, one object per line, either a canonical conversation record
(`id`, `turns`; the last assistant turn is the reply, the turns before it the prompt) or the
flat form {"id", "prompt", "response"}.
"""

from __future__ import annotations

import dataclasses

import tqdm

from easylm_imitate.evaluation.backends import LMBackend
from easylm_imitate.fileio import LineError, iter_jsonl, write_jsonl_atomic


@dataclasses.dataclass(frozen=True)
class Response:
    """One prompt (OpenAI-style messages) and a reply to it."""

    id: str
    messages: tuple[dict, ...]
    response: str

    @property
    def question(self) -> str:
        """The last user message: what a judge is shown as the question."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


def parse_response(obj, path: str = "<input>", line: int = 0) -> Response:
    """Turn one JSON object into a Response; LineError names the problem."""
    if not isinstance(obj, dict):
        raise LineError(path, line, "record must be a JSON object")
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid:
        raise LineError(path, line, "field 'id' must be a non-empty string")
    if "turns" in obj:
        turns = obj["turns"]
        if not isinstance(turns, list) or not all(isinstance(t, dict) and isinstance(t.get("text"), str) for t in turns):
            raise LineError(path, line, "field 'turns' must be a list of {role, text}")
        last = max((i for i, t in enumerate(turns) if t.get("role") == "assistant"), default=None)
        if last is None or last == 0:
            raise LineError(path, line, "turns need a prompt followed by an assistant turn")
        messages = tuple({"role": t["role"], "content": t["text"]} for t in turns[:last])
        return Response(rid, messages, turns[last]["text"])
    prompt, response = obj.get("prompt"), obj.get("response")
    if not isinstance(prompt, str) or not prompt.strip():
        raise LineError(path, line, "field 'prompt' must be a non-empty string")
    if not isinstance(response, str):
        raise LineError(path, line, "field 'response' must be a string")
    return Response(rid, ({"role": "user", "content": prompt},), response)


def load_responses(path: str) -> tuple[dict[str, Response], list[dict]]:
    """id -> Response, and the rejected lines (bad JSON, bad fields, duplicate ids)."""
    out, rejects = {}, []
    for line, obj in iter_jsonl(path):
        try:
            if isinstance(obj, LineError):
                raise obj
            r = parse_response(obj, path, line)
            if r.id in out:
                raise LineError(path, line, f"duplicate id {r.id!r}")
            out[r.id] = r
        except LineError as e:
            rejects.append(e.as_reject())
    return out, rejects


def generate_responses(backend: LMBackend, prompts: list[Response], *, max_new_tokens: int = 512,
                       temperature: float = 0.0, chunk: int = 8) -> dict[str, Response]:
    """Ask `backend` to reply to each prompt (the prompt's own reply is ignored)."""
    out = {}
    for i in tqdm.tqdm(range(0, len(prompts), chunk), desc="answer", unit="batch"):
        batch = prompts[i:i + chunk]
        replies = backend.chat([list(p.messages) for p in batch], max_new_tokens=max_new_tokens,
                               temperature=temperature)
        for p, r in zip(batch, replies):
            out[p.id] = Response(p.id, p.messages, r[0])
    return out


def write_responses(path: str, responses: dict[str, Response]) -> None:
    """Write responses in the flat form (multi-turn prompts keep their messages)."""
    write_jsonl_atomic(path, ({"id": r.id, "prompt": r.question, "messages": list(r.messages),
                               "response": r.response} for r in responses.values()))


def paired(model: dict[str, Response], reference: dict[str, Response]) -> list[tuple[Response, Response]]:
    """(model reply, reference reply) for every id present in both, in reference order."""
    return [(model[i], reference[i]) for i in reference if i in model]
