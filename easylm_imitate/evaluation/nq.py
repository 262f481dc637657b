"""Natural Questions (open): k-shot `Q: ...?\\nA:` prompts, greedy answers, exact match.

Answers are normalised the SQuAD way (lower case, punctuation and the articles a/an/the
removed, whitespace collapsed) and compared with every gold alias. Two scores are reported:
`exact_match` cuts the answer at the first ".", "," or newline (lm-evaluation-harness's
`nq_open` stop set); `exact_match_no_early_stop` only at the newline the generation stopped on.
"""

from __future__ import annotations

import dataclasses
import re
import string

import tqdm

from easylm_imitate.evaluation import results as results_lib
from easylm_imitate.evaluation import stats
from easylm_imitate.evaluation.backends import LMBackend, truncate_at_stop
from easylm_imitate.fileio import LineError, iter_jsonl

EARLY_STOP = ("\n", ".", ",")
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


@dataclasses.dataclass(frozen=True)
class QA:
    """One question with its gold answer aliases."""

    question: str
    answers: tuple[str, ...]


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: list[str] | tuple[str, ...]) -> bool:
    """True when the normalised prediction equals any normalised gold alias."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in answers)


def format_question(question: str) -> str:
    """`Q: {question}?\\nA:` (no second question mark if the question already has one)."""
    question = question.strip()
    if not question.endswith("?"):
        question += "?"
    return f"Q: {question}\nA:"


def build_prompt(shots: list[QA], question: str) -> str:
    """k-shot prompt: each shot answered with its first alias, one per line pair."""
    return "".join(f"{format_question(s.question)} {s.answers[0]}\n" for s in shots) + format_question(question)


def _parse_record(obj, path: str, line: int) -> QA:
    if not isinstance(obj, dict):
        raise LineError(path, line, "record must be a JSON object")
    q = obj.get("question")
    answers = obj.get("answer", obj.get("answers"))
    if not isinstance(q, str) or not q.strip():
        raise LineError(path, line, "field 'question' must be a non-empty string")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise LineError(path, line, "field 'answer' must be a non-empty list of strings")
    return QA(q, tuple(answers))


def load_jsonl(path: str) -> tuple[list[QA], list[dict]]:
    """Read nq_open-format JSONL (`question`, `answer`: list of aliases); returns (items, rejects)."""
    items, rejects = [], []
    for line, obj in iter_jsonl(path):
        try:
            if isinstance(obj, LineError):
                raise obj
            items.append(_parse_record(obj, path, line))
        except LineError as e:
            rejects.append(e.as_reject())
    return items, rejects


def load_hf(split: str, name: str = "nq_open") -> list[QA]:
    """Load a split of Hugging Face `nq_open` (train / validation)."""
    import datasets

    return [QA(r["question"], tuple(r["answer"])) for r in datasets.load_dataset(name, split=split)]


def load_tfds(data_dir: str, split: str, name: str = "natural_questions/open") -> list[QA]:
    """Load a prepared TFDS `natural_questions/open` split from `data_dir` (a local dir or bucket)."""
    import tensorflow_datasets as tfds

    source = tfds.data_source(name, split=split, data_dir=data_dir)
    def text(x):
        return x.decode("utf-8") if isinstance(x, bytes) else str(x)
    return [QA(text(r["question"]), tuple(text(a) for a in r["answer"])) for r in source]


def load(source: str, split: str) -> tuple[list[QA], list[dict]]:
    """`source`: a JSONL file, `hf:NAME`, or `tfds:DATA_DIR` (split: train / validation)."""
    if source.startswith("hf:"):
        return load_hf(split, source[3:] or "nq_open"), []
    if source.startswith("tfds:"):
        return load_tfds(source[5:], split), []
    return load_jsonl(source)


def evaluate(backend: LMBackend, questions: list[QA], shots: list[QA], k: int = 3,
             max_new_tokens: int = 32, limit: int | None = None, chunk: int = 32) -> tuple[dict, list[dict]]:
    """Greedy k-shot answers for `questions` (shots: the first k of `shots`); (record, rows)."""
    if k > len(shots):
        raise ValueError(f"asked for {k} shots but only {len(shots)} shot examples were given")
    questions = questions[:limit] if limit is not None else questions
    if not questions:
        raise results_lib.NothingScored("no NQ questions to evaluate")
    prompts = [build_prompt(shots[:k], q.question) for q in questions]
    outputs: list[str] = []
    with tqdm.tqdm(total=len(prompts), desc="nq_open", unit="q") as bar:
        for i in range(0, len(prompts), chunk):
            batch = prompts[i:i + chunk]
            outputs += [o[0] for o in backend.generate(batch, max_new_tokens=max_new_tokens, stop=["\n"])]
            bar.update(len(batch))
    rows, em, em_full = [], [], []
    for q, out in zip(questions, outputs):
        full = truncate_at_stop(out, ["\n"]).strip()
        early = truncate_at_stop(out, list(EARLY_STOP)).strip()
        em.append(float(exact_match(early, q.answers)))
        em_full.append(float(exact_match(full, q.answers)))
        rows.append({"question": q.question, "answers": list(q.answers), "output": out,
                     "prediction": early, "exact_match": bool(em[-1]),
                     "exact_match_no_early_stop": bool(em_full[-1])})
    metrics = {"exact_match": stats.mean(em), "exact_match_no_early_stop": stats.mean(em_full)}
    stderr = {"exact_match": stats.stderr_of_mean(em), "exact_match_no_early_stop": stats.stderr_of_mean(em_full)}
    settings = {"k": k, "max_new_tokens": max_new_tokens, "decoding": "greedy", "stop": ["\n"],
                "early_stop": list(EARLY_STOP), "normalization": "squad"}
    return results_lib.make_results("nq_open", backend.name, settings, metrics, len(questions), stderr), rows
