"""Questions of an evaluation set, normalised, so generated training data can avoid them."""

from __future__ import annotations

import logging
from collections import Counter

from easylm_imitate.fileio import LineError, iter_jsonl
from easylm_imitate.imitation.qa_pairs import normalize_question

log = logging.getLogger(__name__)


def _question_of(obj) -> str | None:
    if not isinstance(obj, dict):
        return None
    for field in ("question", "prompt"):
        if isinstance(obj.get(field), str):
            return obj[field]
    turns = obj.get("turns")
    if isinstance(turns, list):
        for turn in turns:
            if isinstance(turn, dict) and turn.get("role") == "user" and isinstance(turn.get("text"), str):
                return turn["text"]
    return None


def load_eval_questions(path: str) -> set[str]:
    """Normalised questions of a JSONL evaluation file.

    Each line may be `{"question": ...}` (NQ style), `{"prompt": ...}`, or a canonical record (its
    first user turn). Unreadable lines are skipped and counted in a warning; a file yielding no
    question at all is an error.
    """
    questions: set[str] = set()
    skipped = Counter()
    first_bad = None
    for line, obj in iter_jsonl(path):
        question = None if isinstance(obj, LineError) else _question_of(obj)
        if question is None or not normalize_question(question):
            skipped["invalid JSON" if isinstance(obj, LineError) else "no question"] += 1
            first_bad = first_bad or line
            continue
        questions.add(normalize_question(question))
    if skipped:
        log.warning("%s: skipped %d line(s) without a question (first at line %d): %s", path,
                    sum(skipped.values()), first_bad, dict(skipped))
    if not questions:
        raise ValueError(f"{path}: no questions found (expected JSONL with 'question', 'prompt' or 'turns')")
    return questions
