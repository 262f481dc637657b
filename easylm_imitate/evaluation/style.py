"""Style convergence of a model's replies towards a reference (target) model's replies.

Per prompt, the model's reply is compared with the reference's:
- list use: the reply has a list (two or more lines that start with "-", "*", "•", "+",
  "1." or "1)"); reported as the share of prompts whose *reference* uses one where the
  model does too;
- summary paragraph: the last paragraph (after a blank line) opens with a summarising phrase
  ("In summary", "Overall", "In conclusion", ...); same conditional share;
- unigram overlap: F1 of clipped lower-cased word counts, times 100;
- length correlation: Pearson correlation of the two replies' word counts over prompts;
- authoritative tone (optional, needs a judge client): share of the model's replies the
  judge calls authoritative.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from easylm_imitate.evaluation import results as results_lib
from easylm_imitate.evaluation import stats
from easylm_imitate.evaluation.responses import Response

_LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022+]|\d{1,3}[.)])\s+\S", re.MULTILINE)
_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)
SUMMARY_OPENERS = ("in summary", "in conclusion", "overall", "to summarize", "to summarise",
                   "to sum up", "in short", "all in all", "ultimately", "in brief", "summary:")
_TONE = re.compile(r"\[\[\s*(yes|no)\s*\]\]", re.IGNORECASE)


def uses_list(text: str) -> bool:
    """True when at least two lines are bullet or numbered list items."""
    return len(_LIST_ITEM.findall(text)) >= 2


def has_summary_paragraph(text: str) -> bool:
    """True when the reply has several paragraphs and the last one opens with a summary phrase."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    if len(paragraphs) < 2:
        return False
    return paragraphs[-1].lower().lstrip("#* ").startswith(SUMMARY_OPENERS)


def words(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return _WORD.findall(text.lower())


def unigram_overlap(candidate: str, reference: str) -> float:
    """F1 (x100) of clipped unigram counts between two texts; 0 when either is empty."""
    c, r = Counter(words(candidate)), Counter(words(reference))
    common = sum((c & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(c.values()), common / sum(r.values())
    return 100.0 * 2 * precision * recall / (precision + recall)


def conditional_rate(model_flags: list[bool], reference_flags: list[bool]) -> float | None:
    """Share of items flagged in the reference that are also flagged in the model; None if none are."""
    hits = [m for m, r in zip(model_flags, reference_flags) if r]
    return sum(hits) / len(hits) if hits else None


def parse_tone(text: str | None) -> bool | None:
    """True/False for a judgement naming exactly one of [[Yes]] / [[No]]; None otherwise."""
    found = {m.lower() for m in _TONE.findall(text or "")}
    return (found.pop() == "yes") if len(found) == 1 else None


def judge_tone(client: Any, replies: list[Response], prompt_file: str | None = None,
               max_tokens: int | None = None) -> list[bool | None]:
    """Ask the judge whether each reply is authoritative; None where the judgement is unusable."""
    from easylm_imitate.evaluation.judge import DEFAULT_MAX_TOKENS, DEFAULT_PROMPT_FILE

    with open(prompt_file or DEFAULT_PROMPT_FILE, encoding="utf-8") as f:
        prompt = json.load(f)
    requests = [{"messages": [{"role": "system", "content": prompt["tone_system"]},
                              {"role": "user", "content": prompt["tone_template"].format(question=r.question, answer=r.response)}],
                 "temperature": 0.0, "max_tokens": max_tokens or DEFAULT_MAX_TOKENS} for r in replies]
    results = client.chat(requests)
    return [None if getattr(x, "error", None) or not x.texts else parse_tone(x.texts[0]) for x in results]


def measure(pairs: list[tuple[Response, Response]], tone: list[bool | None] | None = None) -> tuple[dict, dict, list[dict]]:
    """(metrics, stderr, per-pair rows) for (model reply, reference reply) pairs."""
    if not pairs:
        raise results_lib.NothingScored("no (model, reference) pairs to compare: check that the ids match")
    m_list = [uses_list(m.response) for m, _ in pairs]
    r_list = [uses_list(r.response) for _, r in pairs]
    m_sum = [has_summary_paragraph(m.response) for m, _ in pairs]
    r_sum = [has_summary_paragraph(r.response) for _, r in pairs]
    overlap = [unigram_overlap(m.response, r.response) for m, r in pairs]
    m_len = [len(words(m.response)) for m, _ in pairs]
    r_len = [len(words(r.response)) for _, r in pairs]
    metrics = {
        "list_when_reference_lists": conditional_rate(m_list, r_list),
        "summary_when_reference_summarizes": conditional_rate(m_sum, r_sum),
        "unigram_overlap": stats.mean(overlap),
        "length_correlation": stats.pearson(m_len, r_len),
        "model_list_rate": stats.mean([float(x) for x in m_list]),
        "reference_list_rate": stats.mean([float(x) for x in r_list]),
        "model_mean_words": stats.mean(m_len),
        "reference_mean_words": stats.mean(r_len),
    }
    stderr = {"unigram_overlap": stats.stderr_of_mean(overlap)}
    if tone is not None:
        judged = [float(t) for t in tone if t is not None]
        metrics["authoritative_tone"] = stats.mean(judged) if judged else None
        metrics["tone_errors"] = sum(t is None for t in tone)
        stderr["authoritative_tone"] = stats.stderr_of_mean(judged)
    rows = [{"id": m.id, "model_list": a, "reference_list": b, "model_summary": c, "reference_summary": d,
             "unigram_overlap": o, "model_words": ml, "reference_words": rl,
             **({"authoritative": tone[i]} if tone is not None else {})}
            for i, ((m, _), a, b, c, d, o, ml, rl) in enumerate(zip(pairs, m_list, r_list, m_sum, r_sum, overlap, m_len, r_len))]
    return metrics, stderr, rows


def evaluate(pairs: list[tuple[Response, Response]], model: str, reference: str, settings: dict,
             tone: list[bool | None] | None = None) -> tuple[dict, list[dict]]:
    """Results record ('style') and per-pair rows."""
    metrics, stderr, rows = measure(pairs, tone)
    return results_lib.make_results("style", model, settings, metrics, len(pairs), stderr, reference=reference), rows
