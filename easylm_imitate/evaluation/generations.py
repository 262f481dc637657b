"""Continuations saved to disk as they are made, so a rerun generates only what is missing.

The file is JSONL. Line 1 is a header, `{"model": NAME, "settings": {...}}`; each further line
is one prompt's continuations, `{"index": i, "prompt": text, "continuations": [...]}`. Lines
are appended whole, flushed and fsynced one batch at a time, so a crash loses at most the
batch being written; a torn last line is cut off when the file is opened again. A file made
with other settings, another model or other prompts is refused, never mixed in.
"""

from __future__ import annotations

import json
import os


class GenerationsError(ValueError):
    """A saved-generations file that does not belong to this run; the message names the file."""


class SavedGenerations:
    """The continuations saved in `path` for a run with `settings` (a JSON-able dict)."""

    def __init__(self, path: str, settings: dict):
        self.path, self.settings = path, json.loads(json.dumps(settings))
        self.model: str | None = None
        self._rows: dict[int, tuple[str, list[str], int]] = {}  # index -> (prompt, continuations, line)
        self._lines = 0
        if os.path.exists(path):
            self._load()

    def _load(self) -> None:
        with open(self.path, "rb") as f:
            data = f.read()
        good = data.rfind(b"\n") + 1
        if good < len(data):  # a line torn by a crash: drop it, its batch is generated again
            with open(self.path, "r+b") as f:
                f.truncate(good)
        lines = data[:good].decode("utf-8").splitlines()
        self._lines = len(lines)
        for number, text in enumerate(lines, 1):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise GenerationsError(f"{self.path}:{number}: invalid JSON ({e.msg})") from None
            if number == 1:
                self._check_header(obj)
            elif (isinstance(obj, dict) and isinstance(obj.get("index"), int) and isinstance(obj.get("prompt"), str)
                  and isinstance(obj.get("continuations"), list)):
                self._rows[obj["index"]] = (obj["prompt"], obj["continuations"], number)
            else:
                raise GenerationsError(f"{self.path}:{number}: need fields index, prompt and continuations")

    def _check_header(self, obj) -> None:
        if not isinstance(obj, dict) or not isinstance(obj.get("model"), str) or not isinstance(obj.get("settings"), dict):
            raise GenerationsError(f"{self.path}:1: not a saved-generations header (need model and settings)")
        old = obj["settings"]
        differ = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
        if differ:
            was = ", ".join(f"{k}={old.get(k)!r}" for k in differ)
            now = ", ".join(f"{k}={self.settings.get(k)!r}" for k in differ)
            raise GenerationsError(f"{self.path}: saved with other settings ({was}; now {now}); "
                                   "delete it or pick another file")
        self.model = obj["model"]

    def get(self, index: int, prompt: str) -> list[str] | None:
        """The saved continuations of prompt number `index`, or None if there are none yet."""
        if index not in self._rows:
            return None
        saved, continuations, line = self._rows[index]
        if saved != prompt:
            raise GenerationsError(f"{self.path}:{line}: prompt {index} was {saved[:60]!r}, now {prompt[:60]!r} "
                                   "(the prompts changed); delete the file or pick another one")
        return continuations

    def add(self, model: str, items: list[tuple[int, str, list[str]]]) -> None:
        """Append (index, prompt, continuations) items made by `model`, durably."""
        if self.model is not None and model != self.model:
            raise GenerationsError(f"{self.path}: saved from model {self.model!r}, now {model!r}; "
                                   "delete it or pick another file")
        lines = []
        if self.model is None:
            lines.append({"model": model, "settings": self.settings})
            self.model = model
        lines += [{"index": i, "prompt": p, "continuations": list(c)} for i, p, c in items]
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
            f.flush()
            os.fsync(f.fileno())
        for number, (i, p, c) in enumerate(items, self._lines + len(lines) - len(items) + 1):
            self._rows[i] = (p, list(c), number)
        self._lines += len(lines)
