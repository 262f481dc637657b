"""Bootstrap confidence intervals over items, from the per-item rows an evaluation writes.

Method (the report's error bars): the items of a run (its `*.details.jsonl` rows) are
resampled with replacement `n_boot` times (default 1000) with a fixed seed; the metric is
recomputed on each resample exactly as the evaluation computes it (a mean of per-item
scores, a ratio such as "list use when the reference uses one", a Pearson correlation, a
token-weighted loss); the interval is the percentile interval (2.5th and 97.5th percentile
for 95%). For a point averaged over several seeds, each seed's items are resampled
independently and the replicates are averaged across seeds before taking percentiles, so
the interval is over items of the seed mean; the spread over seeds is reported beside it.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np

N_BOOT = 1000
SEED = 0
LEVEL = 0.95


def _mean(field, transform=float):
    return lambda rows: [np.array([transform(r[field]) for r in rows], dtype=float)], lambda x: x.mean(-1)


def _conditional(model_field, reference_field):
    cols = lambda rows: [np.array([bool(r[model_field]) and bool(r[reference_field]) for r in rows], float),  # noqa: E731
                         np.array([bool(r[reference_field]) for r in rows], float)]
    return cols, lambda hit, ref: _ratio(hit.sum(-1), ref.sum(-1))


def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _pearson(x, y):
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    return _ratio((xc * yc).sum(-1), np.sqrt((xc ** 2).sum(-1) * (yc ** 2).sum(-1)))


def _per_task_pass(rows):
    by_task = defaultdict(list)
    for r in rows:
        by_task[r["task_id"]].append(bool(r["passed"]))
    return [np.array([np.mean(v) for v in by_task.values()], float)]


def _judge_scores(rows):
    score = {"win": 1.0, "tie": 0.5, "loss": 0.0}
    return [np.array([score[r["outcome"]] for r in rows if r["outcome"] in score], float)]


def _authoritative(rows):
    return [np.array([float(r["authoritative"]) for r in rows if r.get("authoritative") is not None], float)]


# (benchmark, metric) -> (columns(rows) -> [per-item arrays], statistic(*resampled 2-D arrays) -> 1-D)
STATISTICS = {
    ("mmlu", "accuracy"): _mean("correct"),
    ("nq_open", "exact_match"): _mean("exact_match"),
    ("nq_open", "exact_match_no_early_stop"): _mean("exact_match_no_early_stop"),
    ("humaneval", "pass@1"): (_per_task_pass, lambda x: x.mean(-1)),
    ("llm_judge", "adjusted_win_rate"): (_judge_scores, lambda x: x.mean(-1)),
    ("toxicity", "mean_non_toxicity"): _mean("toxicity", lambda s: 1.0 - float(np.mean(s))),
    ("toxicity", "expected_max_toxicity"): _mean("toxicity", lambda s: float(np.max(s))),
    ("style", "unigram_overlap"): _mean("unigram_overlap"),
    ("style", "list_when_reference_lists"): _conditional("model_list", "reference_list"),
    ("style", "summary_when_reference_summarizes"): _conditional("model_summary", "reference_summary"),
    ("style", "length_correlation"): (lambda rows: [np.array([r["model_words"] for r in rows], float),
                                                    np.array([r["reference_words"] for r in rows], float)], _pearson),
    ("style", "authoritative_tone"): (_authoritative, lambda x: x.mean(-1)),
    ("heldout_loss", "loss"): (lambda rows: [np.array([r["nll"] for r in rows], float),
                                             np.array([r["tokens"] for r in rows], float)],
                               lambda nll, tok: _ratio(nll.sum(-1), tok.sum(-1))),
}


def read_details(path: str) -> list[dict]:
    """The per-item rows of a `*.details.jsonl` file; ValueError names the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: invalid JSON ({e.msg})") from None
    return rows


def replicates(benchmark: str, metric: str, rows: list[dict], n_boot: int = N_BOOT, seed: int = SEED):
    """`n_boot` bootstrap replicates of `metric` over the items in `rows` (a 1-D array, NaN where a
    resample leaves the metric undefined), or None when the metric has no item-level statistic
    or the rows lack its fields."""
    stat = STATISTICS.get((benchmark, metric))
    if stat is None or not rows:
        return None
    columns, statistic = stat
    try:
        cols = columns(rows)
    except (KeyError, TypeError, ValueError):
        return None
    n = len(cols[0])
    if n == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    return statistic(*[c[idx] for c in cols])


def interval(reps_per_seed: list, level: float = LEVEL) -> tuple[float, float] | None:
    """The percentile interval of the mean over seeds of per-seed replicates (see the module
    docstring); None when any seed has none or too few replicates are defined."""
    if not reps_per_seed or any(r is None for r in reps_per_seed):
        return None
    reps = np.mean(np.stack(reps_per_seed), axis=0)
    reps = reps[~np.isnan(reps)]
    if len(reps) < 10:
        return None
    lo, hi = np.percentile(reps, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)
