"""NQ-synthetic building blocks: the seed QA pairs, the few-shot prompt, `Q:`/`A:` parsing, normalisation."""

from __future__ import annotations

import dataclasses
import importlib.resources
import re
import unicodedata
from collections import Counter

from easylm_imitate.fileio import LineError, iter_jsonl

SEEDS_PER_PROMPT = 5
_MARKER = re.compile(r"^(q|a|question|answer)\s*\d*\s*:\s*(.*)$", re.IGNORECASE)
_INLINE_ANSWER = re.compile(r"\s(?:a|answer)\s*:\s", re.IGNORECASE)
_LIST_PREFIX = re.compile(r"^(?:[-*\u2022>]\s*|\(?\d{1,4}\s*[.)]\s*)")
_EMPHASIS = re.compile(r"[*_`]+")


@dataclasses.dataclass(frozen=True)
class QAPair:
    """One question and its answer."""

    question: str
    answer: str


def default_seeds_path() -> str:
    """The 10 Natural Questions seed pairs shipped with the package."""
    return str(importlib.resources.files("easylm_imitate") / "assets" / "nq_synthetic_seeds.jsonl")


def load_seeds(path: str | None = None) -> list[QAPair]:
    """Read seed pairs (JSONL with string `question` and `answer`); errors name the file and line."""
    path = path or default_seeds_path()
    seeds = []
    for line, obj in iter_jsonl(path):
        if isinstance(obj, LineError):
            raise obj
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) and obj[k].strip()
                                                for k in ("question", "answer")):
            raise LineError(path, line, "a seed needs non-empty string fields 'question' and 'answer'")
        seeds.append(QAPair(obj["question"].strip(), obj["answer"].strip()))
    if len(seeds) < SEEDS_PER_PROMPT:
        raise ValueError(f"{path}: {len(seeds)} seed pairs; NQ-synthetic shows {SEEDS_PER_PROMPT} per prompt")
    return seeds


def build_prompt(seeds: list[QAPair], pairs_per_call: int) -> str:
    """The instruction asking for `pairs_per_call` new pairs similar to, but distinct from, `seeds`."""
    shots = "\n".join(f"Q: {s.question}\nA: {s.answer}" for s in seeds)
    return (
        "Here are some questions about Wikipedia-like entities (people, places, works, events, things), "
        "each followed by a concise answer:\n\n"
        f"{shots}\n\n"
        f"Write {pairs_per_call} new question-answer pairs that are similar to these but distinct from them "
        "and from each other. Each question must be in lowercase and answerable from Wikipedia; each answer "
        "must be concise, a few words at most. Use exactly this format and write nothing else:\n"
        "Q: <question>\nA: <answer>"
    )


def normalize_question(text: str) -> str:
    """The form used to compare questions: NFKC, lowercase, punctuation removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in text)
    return " ".join(text.split())


def _clean(text: str) -> str:
    text = _EMPHASIS.sub("", text)
    return " ".join(text.split()).strip(" \"'\u201c\u201d")


def _items(text: str) -> tuple[list[list], Counter]:
    """Split a reply into [tag, text, continued] items ("Q"/"A"); stray lines are counted."""
    items: list[list] = []
    stray = Counter()
    previous_blank = True
    for raw in text.splitlines():
        line = _EMPHASIS.sub("", _LIST_PREFIX.sub("", raw.strip())).strip()
        if not line:
            previous_blank = True
            continue
        match = _MARKER.match(line)
        if match:
            tag = match.group(1)[0].upper()
            body = match.group(2)
            inline = _INLINE_ANSWER.search(" " + body) if tag == "Q" else None
            if inline:  # "Q: ... A: ..." on one line
                cut = inline.start()
                items.append(["Q", body[:max(cut - 1, 0)], False])
                items.append(["A", body[inline.end() - 1:], False])
            else:
                items.append([tag, body, False])
        elif items and not previous_blank:
            items[-1][1] += " " + line
            items[-1][2] = True
        elif items:
            stray["stray_text"] += 1
        previous_blank = False
    return items, stray


def parse_qa(text: str, max_answer_words: int = 16) -> tuple[list[QAPair], Counter]:
    """Pairs found in a reply (questions lowercased) and a Counter of malformed pieces by reason.

    Reasons: question_without_answer, answer_without_question, empty_question, empty_answer,
    multi_line, answer_too_long, stray_text (text after a blank line that is neither Q nor A).
    Text before the first `Q:` (a preamble) is ignored and not counted.
    """
    items, malformed = _items(text or "")
    pairs = []
    i = 0
    while i < len(items):
        tag, body, continued = items[i]
        if tag == "A":
            malformed["answer_without_question"] += 1
            i += 1
            continue
        if i + 1 >= len(items) or items[i + 1][0] != "A":
            malformed["question_without_answer"] += 1
            i += 1
            continue
        _, answer, answer_continued = items[i + 1]
        i += 2
        question, answer = _clean(body).lower(), _clean(answer)
        if not question:
            malformed["empty_question"] += 1
        elif not answer:
            malformed["empty_answer"] += 1
        elif continued or answer_continued:
            malformed["multi_line"] += 1
        elif len(answer.split()) > max_answer_words:
            malformed["answer_too_long"] += 1
        else:
            pairs.append(QAPair(question, answer))
    return pairs, malformed
