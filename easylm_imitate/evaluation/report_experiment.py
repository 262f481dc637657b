"""Read an experiment directory's evaluation results and summarise them per point.

An experiment (`python -m easylm_imitate.experiment`) writes each cell's evaluations to
`DIR/cells/<base>__<data>__s<seed>/eval_<name>/results.json`, with the per-item rows beside
it (`results.details.jsonl`). A *point* is one (benchmark, base model, data) over its seeds:
its value is the mean over the seeds that did not fail, with a bootstrap interval over items
(`bootstrap.py`) and the spread over seeds. Kinds of data: `none` (the base), a token budget
(broad imitation: `imitation_tokens` is set) or a fixed file (local imitation: no budget).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import statistics
from collections import defaultdict

from easylm_imitate.evaluation import bootstrap
from easylm_imitate.evaluation.report import find_results
from easylm_imitate.evaluation.results import is_failed

_CELL = re.compile(r"^(?P<base>.+)__(?P<data>.+)__s(?P<seed>\d+)$")


@dataclasses.dataclass
class Point:
    """One benchmark metric of one base model x data over its seeds."""

    value: float | None
    ci: tuple[float, float] | None
    seeds: list[tuple[int, float, str]]  # (seed, value, results file) of the runs that did not fail
    failed: list[tuple[int, str, str]]  # (seed, reason, results file)

    @property
    def seed_sd(self) -> float | None:
        """Standard deviation of the value over seeds (None with fewer than two)."""
        return statistics.stdev(v for _, v, _ in self.seeds) if len(self.seeds) >= 2 else None


def load(experiment_dir: str) -> tuple[list[dict], list[dict]]:
    """Every eval results file under `experiment_dir/cells`, annotated with `_cell`, `_data`,
    `_seed` and `_details` (the details path or None); (records, rejects)."""
    cells = os.path.join(experiment_dir, "cells")
    if not os.path.isdir(cells):
        raise ValueError(f"{experiment_dir}: not an experiment directory (no cells/ inside)")
    files = sorted(glob.glob(os.path.join(cells, "*", "eval_*", "results.json")))
    records, rejects = find_results(files)
    for r in records:
        cell = os.path.basename(os.path.dirname(os.path.dirname(r["_file"])))
        m = _CELL.match(cell)
        _annotate(r, cell, m["data"] if m else cell, int(m["seed"]) if m else 0, m["base"] if m else cell)
    return records, rejects


def _annotate(r: dict, cell: str, data: str, seed: int, base: str) -> None:
    r["_cell"], r["_data"], r["_seed"] = cell, data, seed
    r.setdefault("base_model", base)
    details = r["_file"][:-len(".json")] + ".details.jsonl"
    r["_details"] = details if os.path.exists(details) else None


def load_ceiling(experiment_dir: str) -> tuple[list[dict], list[dict]]:
    """The experiment-level results of the target's second sample against its reference
    replies (`DIR/target/eval_*/results.json`, written when the config sets
    `reference.second_sample`): the ceiling rows; (records, rejects), empty without them."""
    files = sorted(glob.glob(os.path.join(experiment_dir, "target", "eval_*", "results.json")))
    records, rejects = find_results(files)
    for r in records:
        _annotate(r, "target", "second sample", 0, r.get("model", "target"))
    return records, rejects


def data_kind(r: dict) -> str:
    """`base`, `broad` or `local` (see the module docstring)."""
    if r["_data"] == "none":
        return "base"
    return "broad" if r.get("imitation_tokens") is not None else "local"


def groups(records: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """(benchmark, base model, data) -> its records (one per seed), in the report's order."""
    out = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.get("base_params", 0), r["base_model"], data_kind(r) == "local",
                                            r.get("imitation_tokens") or 0, r["_data"], r["_seed"])):
        out[(r["benchmark"], r["base_model"], r["_data"])].append(r)
    return out


class Summarizer:
    """Points of records, with each file's details read and resampled once per metric."""

    def __init__(self, n_boot: int = bootstrap.N_BOOT):
        self.n_boot = n_boot
        self._rows: dict[str, list[dict]] = {}

    def _replicates(self, r: dict, metric: str):
        path = r["_details"]
        if path is None:
            return None
        if path not in self._rows:
            self._rows[path] = bootstrap.read_details(path)
        return bootstrap.replicates(r["benchmark"], metric, self._rows[path], self.n_boot)

    def point(self, records: list[dict], metric: str) -> Point | None:
        """The point of `metric` over `records` (seeds); None when no record has the metric or failed."""
        ok = [r for r in records if not is_failed(r) and isinstance(r["metrics"].get(metric), (int, float))]
        failed = [(r["_seed"], r["failure"], r["_file"]) for r in records if is_failed(r)]
        if not ok and not failed:
            return None
        seeds = [(r["_seed"], float(r["metrics"][metric]), r["_file"]) for r in ok]
        value = statistics.fmean(v for _, v, _ in seeds) if seeds else None
        ci = bootstrap.interval([self._replicates(r, metric) for r in ok]) if ok else None
        return Point(value, ci, seeds, failed)
