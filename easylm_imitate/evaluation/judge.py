"""Pairwise LLM judge: each (model, reference) pair judged in both orders.

Verdicts are parsed from the judge's text ("[[A]]", "[[B]]", "[[C]]" for a tie). A pair whose
two orders disagree counts as a tie (flip); a pair with an unparseable or failed judgement in
either order is an error: counted and reported, never a win.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from typing import Any, Protocol

from easylm_imitate.evaluation import results as results_lib
from easylm_imitate.evaluation import stats
from easylm_imitate.evaluation.responses import Response
from easylm_imitate.evaluation.style import words

# The shipped prompts ask for a short explanation, then the verdict (a bare verdict needs ~8 tokens).
DEFAULT_MAX_TOKENS = 512
DEFAULT_PROMPT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts", "judge_pairwise.json")
_VERDICT = re.compile(r"\[\[\s*(A|B|C|TIE)\s*\]\]", re.IGNORECASE)


class ChatClientLike(Protocol):
    """The project's journaled chat client (easylm_imitate.imitation.client.ChatClient)."""

    def chat(self, requests: list[dict]) -> list[Any]:
        """One result per request, each with `.texts` and `.error`."""


def load_prompt(path: str | None = None) -> dict:
    """Read a judge prompt file (JSON: system, user_template with {question} {answer_a} {answer_b})."""
    path = path or DEFAULT_PROMPT_FILE
    with open(path, encoding="utf-8") as f:
        prompt = json.load(f)
    for key in ("system", "user_template"):
        if not isinstance(prompt.get(key), str):
            raise ValueError(f"{path}: judge prompt needs a string field '{key}'")
    for field in ("{question}", "{answer_a}", "{answer_b}"):
        if field not in prompt["user_template"]:
            raise ValueError(f"{path}: user_template lacks {field}")
    return prompt


def parse_verdict(text: str | None) -> str | None:
    """'A', 'B' or 'tie' when the judgement names exactly one verdict; None otherwise."""
    if not text:
        return None
    found = {m.upper() for m in _VERDICT.findall(text)}
    found = {"tie" if v in ("C", "TIE") else v for v in found}
    return found.pop() if len(found) == 1 else None


def combine(verdict_model_first: str | None, verdict_reference_first: str | None) -> str:
    """Model's outcome from both orders: 'win', 'loss', 'tie' or 'error' (flip -> 'tie')."""
    if verdict_model_first is None or verdict_reference_first is None:
        return "error"
    first = {"A": "win", "B": "loss", "tie": "tie"}[verdict_model_first]
    second = {"A": "loss", "B": "win", "tie": "tie"}[verdict_reference_first]
    return first if first == second else "tie"


def build_request(prompt: dict, question: str, answer_a: str, answer_b: str,
                  max_tokens: int = DEFAULT_MAX_TOKENS) -> dict:
    """One chat request asking the judge to compare answer A and answer B."""
    user = prompt["user_template"].format(question=question, answer_a=answer_a, answer_b=answer_b)
    return {"messages": [{"role": "system", "content": prompt["system"]}, {"role": "user", "content": user}],
            "temperature": 0.0, "max_tokens": max_tokens}


def _text(result: Any) -> str | None:
    if getattr(result, "error", None):
        return None
    texts = getattr(result, "texts", None) or []
    return texts[0] if texts else None


def judge_pairs(client: ChatClientLike, pairs: list[tuple[Response, Response]], prompt: dict | None = None,
                max_tokens: int = DEFAULT_MAX_TOKENS) -> list[dict]:
    """Judge every (model, reference) pair in both orders; one row per pair."""
    prompt = prompt or load_prompt()
    requests = []
    for model, ref in pairs:
        requests.append(build_request(prompt, ref.question, model.response, ref.response, max_tokens))
        requests.append(build_request(prompt, ref.question, ref.response, model.response, max_tokens))
    replies = client.chat(requests)
    rows = []
    for j, (model, ref) in enumerate(pairs):
        t1, t2 = _text(replies[2 * j]), _text(replies[2 * j + 1])
        v1, v2 = parse_verdict(t1), parse_verdict(t2)
        rows.append({"id": ref.id, "verdict_model_first": v1, "verdict_reference_first": v2,
                     "outcome": combine(v1, v2),
                     "flip": v1 is not None and v2 is not None and combine(v1, v2) == "tie" and not (v1 == v2 == "tie"),
                     "judgements": [t1, t2],
                     "errors": [getattr(replies[2 * j], "error", None), getattr(replies[2 * j + 1], "error", None)],
                     "model_words": len(words(model.response)), "reference_words": len(words(ref.response))})
    return rows


def summarize(rows: list[dict], model: str, reference: str, settings: dict) -> dict:
    """Results record: win/tie/loss rates, adjusted win rate, flip rate, errors, mean lengths."""
    counts = Counter(r["outcome"] for r in rows)
    valid = [r for r in rows if r["outcome"] != "error"]
    scores = [{"win": 1.0, "tie": 0.5, "loss": 0.0}[r["outcome"]] for r in valid]
    n = len(valid)
    metrics = {
        "win_rate": counts["win"] / n if n else None,
        "tie_rate": counts["tie"] / n if n else None,
        "loss_rate": counts["loss"] / n if n else None,
        "adjusted_win_rate": stats.mean(scores) if n else None,
        "flip_rate": sum(r["flip"] for r in valid) / n if n else None,
        "win": counts["win"], "tie": counts["tie"], "loss": counts["loss"], "errors": counts["error"],
        "model_mean_words": stats.mean([r["model_words"] for r in rows]) if rows else None,
        "reference_mean_words": stats.mean([r["reference_words"] for r in rows]) if rows else None,
    }
    stderr = {"adjusted_win_rate": stats.stderr_of_mean(scores)}
    return results_lib.make_results("llm_judge", model, settings, metrics, n, stderr, reference=reference)
