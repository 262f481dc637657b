"""MMLU: k-shot multiple choice scored by comparing log-likelihoods of " A".." D".

Prompts follow lm-evaluation-harness's `mmlu` (default) task: a subject header, the first k
dev examples of the subject with their answers, then the test question ending in "Answer:".
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import logging
import os
from collections import defaultdict

import tqdm

from easylm_imitate.evaluation import results as results_lib
from easylm_imitate.evaluation import stats
from easylm_imitate.evaluation.backends import LMBackend
from easylm_imitate.evaluation.mmlu_subjects import CATEGORIES, category_of

LETTERS = ("A", "B", "C", "D")


@dataclasses.dataclass(frozen=True)
class Question:
    """One MMLU item: `answer` is the index of the correct choice."""

    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int


@dataclasses.dataclass
class MMLUData:
    """Dev (shot) and test items, plus the rows set aside with their reasons."""

    dev: list[Question]
    test: list[Question]
    rejects: list[dict]


def format_question(q: Question, with_answer: bool) -> str:
    """One question block; with its answer letter when used as a shot."""
    lines = [q.question.strip()] + [f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices)]
    text = "\n".join(lines) + "\nAnswer:"
    return text + f" {LETTERS[q.answer]}\n\n" if with_answer else text


def build_prompt(subject: str, shots: list[Question], q: Question) -> str:
    """The full k-shot context for `q` (the continuations are " A".." D")."""
    header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    return header + "".join(format_question(s, True) for s in shots) + format_question(q, False)


def _parse_row(row: list[str], subject: str, where: str) -> Question:
    if len(row) != 6:
        raise ValueError(f"{where}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
    answer = row[5].strip().upper()
    if answer not in LETTERS:
        raise ValueError(f"{where}: answer must be one of A-D, got {row[5]!r}")
    return Question(subject, row[0], tuple(row[1:5]), LETTERS.index(answer))


def _read_csv(path: str, subject: str, rejects: list[dict]) -> list[Question]:
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            try:
                out.append(_parse_row(row, subject, where))
            except ValueError as e:
                rejects.append({"file": path, "line": reader.line_num, "reason": str(e).split(": ", 1)[1]})
    return out


def load_csv_dir(data_dir: str, test_split: str = "test") -> MMLUData:
    """Read the original MMLU layout: `{dir}/dev/{subject}_dev.csv`, `{dir}/{split}/{subject}_{split}.csv`."""
    rejects: list[dict] = []
    dev, test = [], []
    test_files = sorted(glob.glob(os.path.join(data_dir, test_split, f"*_{test_split}.csv")))
    if not test_files:
        raise FileNotFoundError(f"no {test_split} CSV files under {os.path.join(data_dir, test_split)}")
    for path in test_files:
        subject = os.path.basename(path)[: -len(f"_{test_split}.csv")]
        test += _read_csv(path, subject, rejects)
        dev_path = os.path.join(data_dir, "dev", f"{subject}_dev.csv")
        if os.path.exists(dev_path):
            dev += _read_csv(dev_path, subject, rejects)
    return MMLUData(dev, test, rejects)


def load_hf(name: str = "cais/mmlu", config: str = "all", test_split: str = "test") -> MMLUData:
    """Load `cais/mmlu` (or a dataset with the same columns) through Hugging Face `datasets`."""
    import datasets

    ds = datasets.load_dataset(name, config)
    def convert(split):
        return [Question(r["subject"], r["question"], tuple(r["choices"]), int(r["answer"])) for r in ds[split]]
    return MMLUData(convert("dev"), convert(test_split), [])


def load(source: str, test_split: str = "test") -> MMLUData:
    """`source` is a directory in the original CSV layout or `hf:NAME[:CONFIG]`."""
    if source.startswith("hf:"):
        parts = source[3:].split(":")
        return load_hf(parts[0], parts[1] if len(parts) > 1 else "all", test_split)
    return load_csv_dir(source, test_split)


def evaluate(backend: LMBackend, data: MMLUData, k: int = 5, subjects: list[str] | None = None,
             limit_per_subject: int | None = None, chunk: int = 64) -> tuple[dict, list[dict]]:
    """Score `data.test` k-shot; returns (results record, per-question rows)."""
    shots_by_subject: dict[str, list[Question]] = defaultdict(list)
    for q in data.dev:
        shots_by_subject[q.subject].append(q)
    per_subject_count: dict[str, int] = defaultdict(int)
    questions = []
    for q in data.test:
        if subjects and q.subject not in subjects:
            continue
        if limit_per_subject is not None and per_subject_count[q.subject] >= limit_per_subject:
            continue
        per_subject_count[q.subject] += 1
        questions.append(q)
    if not questions:
        raise results_lib.NothingScored("no MMLU test questions to evaluate (check --data and --subjects)")
    short = sorted({q.subject for q in questions if len(shots_by_subject[q.subject]) < k})
    if short:
        logging.warning("fewer than %d dev shots for: %s", k, ", ".join(short))

    requests = []
    for q in questions:
        context = build_prompt(q.subject, shots_by_subject[q.subject][:k], q)
        requests += [(context, f" {letter}") for letter in LETTERS]
    scores: list[tuple[float, bool]] = []
    with tqdm.tqdm(total=len(requests), desc="mmlu", unit="req") as bar:
        for i in range(0, len(requests), chunk):
            scores += backend.loglikelihood(requests[i:i + chunk])
            bar.update(len(requests[i:i + chunk]))

    rows, by_subject, by_category, correct = [], defaultdict(list), defaultdict(list), []
    for j, q in enumerate(questions):
        lls = [s[0] for s in scores[4 * j:4 * j + 4]]
        pred = max(range(4), key=lambda i: lls[i])
        ok = float(pred == q.answer)
        correct.append(ok)
        by_subject[q.subject].append(ok)
        by_category[category_of(q.subject)].append(ok)
        rows.append({"subject": q.subject, "question": q.question, "answer": LETTERS[q.answer],
                     "prediction": LETTERS[pred], "loglikelihoods": lls, "correct": bool(ok)})

    metrics = {"accuracy": stats.mean(correct),
               "accuracy_macro_subjects": stats.mean([stats.mean(v) for v in by_subject.values()])}
    stderr = {"accuracy": stats.stderr_of_mean(correct)}
    for cat in CATEGORIES:
        if by_category[cat]:
            metrics[f"accuracy/{cat}"] = stats.mean(by_category[cat])
            stderr[f"accuracy/{cat}"] = stats.stderr_of_mean(by_category[cat])
    for subject in sorted(by_subject):
        metrics[f"accuracy/{subject}"] = stats.mean(by_subject[subject])
    settings = {"k": k, "subjects": sorted(by_subject), "limit_per_subject": limit_per_subject,
                "prompt_format": "lm-evaluation-harness mmlu default", "rejected_rows": len(data.rejects)}
    record = results_lib.make_results("mmlu", backend.name, settings, metrics, len(questions), stderr)
    return record, rows
