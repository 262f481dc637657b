"""Run the dataset build end to end and write its outputs.

`build(sources, options, counter, out_dir)` writes, each atomically:
- `train.jsonl`: every training conversation (block-split pieces) in mix order;
- `train_<BUDGET>.jsonl`: for each token budget, the shortest-error prefix of that order
  (so the budgets are nested);
- `eval_prompts.jsonl`: held-out prompts with the target's reference reply;
- `rejects.jsonl`: file, line, source, step, code, reason (and id) of everything dropped;
- `report.json`: counts per step and source, drops per reason, turns, budgets, diversity.
It returns the report; `summary(report)` is the readable form printed by the binary.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence

import numpy as np

from easylm_imitate.data import pipeline as P
from easylm_imitate.data.bleu import query_diversity
from easylm_imitate.data.decontaminate import NgramIndex, decontaminate_step
from easylm_imitate.data.progress import Progress, no_bars, track
from easylm_imitate.data.readers import KINDS
from easylm_imitate.data.tokens import TokenCounter
from easylm_imitate.fileio import atomic_open, write_json_atomic, write_jsonl_atomic

REPORT_VERSION = 1


def validate(sources: Sequence[P.SourceSpec], options: P.Options) -> None:
    """ValueError naming the problem if the sources or options cannot make a build."""
    if not sources:
        raise ValueError("no sources: give --config with sources or at least one --input=kind:PATH")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique: {names}")
    if options.mix_by not in ("size", "weight"):
        raise ValueError(f"mix_by must be size or weight, not {options.mix_by!r}")
    if options.dedup not in ("source", "global", "off"):
        raise ValueError(f"dedup must be source, global or off, not {options.dedup!r}")
    if options.html not in ("auto", "always", "never"):
        raise ValueError(f"clean.html must be auto, always or never, not {options.html!r}")
    for s in sources:
        if not s.weight > 0:
            raise ValueError(f"source {s.name!r}: weight must be > 0, got {s.weight}")
        if s.options.kind not in KINDS:
            raise ValueError(f"source {s.name!r}: unknown kind {s.options.kind!r} (expected one of {', '.join(KINDS)})")
        if not s.path.startswith(("hf:", "tfds:")) and not os.path.isfile(s.path):
            raise ValueError(f"source {s.name!r}: input file not found: {s.path}")


def build(sources: Sequence[P.SourceSpec], options: P.Options, counter: TokenCounter, out_dir: str,
          log: Callable[[str], None] = print, progress: Progress = no_bars,
          decontaminate: NgramIndex | None = None) -> dict:
    """Build the dataset from `sources` into `out_dir`; returns the report (also report.json).

    `log` gets a line per source read; `progress` makes a bar per stage (see data.progress);
    `decontaminate` (data.decontaminate.load_index) drops conversations sharing an n-gram with
    a benchmark item, before eval prompts are held out.
    """
    validate(sources, options)
    names = [s.name for s in sources]
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    ledger = P.Ledger(names)
    convs: list[P.Conv] = []
    rows: dict[str, int] = {}
    for spec in sources:
        got, rows[spec.name] = P.read_source(spec, ledger, progress)
        convs += got
        log(f"read {spec.name}: {rows[spec.name]} rows -> {len(got)} conversations ({spec.path})")
    ledger.steps["read"] = {s: {"records": rows[s]} for s in names}
    lap("read")
    P.count_tokens(convs, counter, progress)
    ledger.record_step("parsed", convs, counter)
    parsed = len(convs)
    lap("tokens")

    convs = P.clean_step(convs, options, ledger, progress)
    P.count_tokens(convs, counter, progress, "tokens (cleaned)")
    ledger.record_step("cleaned", convs, counter)
    lap("clean")
    convs = P.language_step(convs, options.languages, ledger, progress)
    ledger.record_step("language", convs, counter)
    lap("language")
    convs = P.dedup_step(convs, options.dedup, ledger, progress)
    ledger.record_step("dedup", convs, counter)
    convs = P.blocked_step(convs, options.blocked_phrases, ledger, progress)
    ledger.record_step("blocked", convs, counter)
    convs = P.target_logprobs_step(convs, counter, ledger, progress)  # replies with the target's log-probs
    lap("dedup+blocked")
    decontamination = None
    if decontaminate is not None:
        convs, decontamination = decontaminate_step(convs, decontaminate, ledger, progress)
        ledger.record_step("decontaminated", convs, counter)
        lap("decontaminate")

    index, owners, firsts = P.build_query_index(convs, progress)
    lap("bleu_index")
    chosen, eval_stats = P.hold_out(convs, index, owners, options, progress)
    chosen_set = set(chosen)
    evals = [P.eval_record(convs[i]) for i in chosen]
    train_convs = [c for i, c in enumerate(convs) if i not in chosen_set]
    ledger.record_step("held_out", train_convs, counter)
    lap("hold_out")

    train_owner = np.ones(len(convs), bool)
    train_owner[chosen] = False
    allowed = firsts & train_owner[owners] if len(owners) else np.zeros(0, bool)
    candidates = np.flatnonzero(allowed).tolist()
    if options.diversity_sample and len(candidates) > options.diversity_sample:
        candidates = sorted(random.Random(f"{options.seed}:diversity").sample(candidates, options.diversity_sample))
    diversity = query_diversity(index, candidates, allowed, progress)
    diversity["population"] = "first user query of each training conversation"
    del index
    lap("diversity")

    pieces = P.split_step(train_convs, counter, options.block_length, progress)
    tokens = counter.exact_counts([p.record() for p in pieces], progress) if not counter.exact else \
        [counter.total(p.lengths) for p in pieces]
    ledger.record_step("split", pieces, counter)
    if options.mix_by == "size":
        weights = {s.name: 0.0 for s in sources}
        for piece, t in zip(pieces, tokens):
            weights[piece.source] += t
        weights = {s: max(w, 1.0) for s, w in weights.items()}
    else:
        weights = {s.name: s.weight for s in sources}
    order = P.mix_order(pieces, tokens, weights, options.seed, progress)
    order, prefix_lengths = P.fit_budgets(order, tokens, [b for _, b in options.token_budgets])
    mixed = [pieces[i] for i in order]
    mixed_tokens = np.asarray([tokens[i] for i in order], np.int64)
    ledger.steps["mixed"] = {s: {"records": 0, "tokens": 0} for s in names}
    for piece, t in zip(mixed, mixed_tokens):
        ledger.steps["mixed"][piece.source]["records"] += 1
        ledger.steps["mixed"][piece.source]["tokens"] += int(t)
    cumulative = np.concatenate([[0], np.cumsum(mixed_tokens)])
    budgets = []
    for (label, budget), k in zip(options.token_budgets, prefix_lengths):
        got = int(cumulative[k])
        per_source = {s: 0 for s in names}
        for piece, t in zip(mixed[:k], mixed_tokens[:k]):
            per_source[piece.source] += int(t)
        budgets.append({"label": label, "budget": budget, "records": k, "tokens": got,
                        "error_pct": round(100.0 * (got - budget) / budget, 4),
                        "within_1pct": abs(got - budget) <= 0.01 * budget,
                        "exceeds_available": budget > int(cumulative[-1]),
                        "file": f"train_{label}.jsonl", "tokens_per_source": per_source})
    lap("split+mix")

    os.makedirs(out_dir, exist_ok=True)
    _write_records(os.path.join(out_dir, "train.jsonl"), mixed, progress)
    for b in budgets:
        _write_records(os.path.join(out_dir, b["file"]), mixed[:b["records"]], progress)
    write_jsonl_atomic(os.path.join(out_dir, "eval_prompts.jsonl"), evals)
    write_jsonl_atomic(os.path.join(out_dir, "rejects.jsonl"), (r.as_json() for r in ledger.rejects))
    rejected_records = sum(1 for r in ledger.rejects if r.step != "read")
    read_rejects = len(ledger.rejects) - rejected_records
    report = {
        "version": REPORT_VERSION,
        "seed": options.seed,
        "token_counting": counter.describe(),
        "template": options.template,
        "block_length": options.block_length,
        "mix_by": options.mix_by,
        "sources": {s.name: {"kind": s.options.kind, "path": s.path, "weight": s.weight} for s in sources},
        "accounting": {
            "rows_read": sum(rows.values()), "rows_rejected": read_rejects, "records_parsed": parsed,
            "records_rejected": rejected_records, "records_train": len(train_convs), "records_eval": len(evals),
            "balanced": parsed == rejected_records + len(train_convs) + len(evals),
        },
        "steps": dict(ledger.steps),  # in the order the steps ran
        "drops": ledger.drops(),
        **({"decontamination": decontamination} if decontamination is not None else {}),
        "cleaning_events": {s: dict(sorted(ledger.events[s].items())) for s in names},
        "turns_per_conversation": P.turn_stats(train_convs),
        "pieces": {"count": len(pieces), "split_conversations": sum(1 for p in pieces if p.meta.get("part") == 1),
                   "over_block": sum(1 for t in tokens if t > options.block_length)},
        "eval_prompts": eval_stats,
        "diversity": diversity,
        "budgets": budgets,
        "outputs": ["train.jsonl", *[b["file"] for b in budgets], "eval_prompts.jsonl", "rejects.jsonl", "report.json"],
    }
    write_json_atomic(os.path.join(out_dir, "report.json"), report)
    lap("write")
    report["_timings_s"] = timings  # not in report.json: outputs stay byte-identical
    return report


def _write_records(path: str, pieces: Sequence[P.Conv], progress: Progress = no_bars) -> None:
    """One JSON line per piece's canonical record, written atomically."""
    import json

    with atomic_open(path) as f:
        for piece in track(pieces, progress, f"write {os.path.basename(path)}", unit="record"):
            f.write(json.dumps(piece.record(), ensure_ascii=False) + "\n")


def summary(report: dict) -> str:
    """A readable account of a build report."""
    lines = []
    acc = report["accounting"]
    lines.append(f"token counting: {report['token_counting']}")
    lines.append(f"rows read {acc['rows_read']} (rejected unreadable {acc['rows_rejected']}); "
                 f"records {acc['records_parsed']} = train {acc['records_train']} + eval {acc['records_eval']} "
                 f"+ rejected {acc['records_rejected']}" + ("" if acc["balanced"] else "  ** DOES NOT ADD UP **"))
    if acc["records_train"] == 0:
        lines.append("WARNING: no training records were kept (see rejects.jsonl and the drops below)")
    steps = report["steps"]
    sources = list(report["sources"])
    header = f"{'step':<10}" + "".join(f"{s[:22]:>26}" for s in sources)
    lines += ["", "records / tokens per step and source", header]
    for step, per in steps.items():
        cells = []
        for s in sources:
            row = per.get(s, {})
            cell = f"{row.get('records', 0)}" + (f" / {_fmt(row['tokens'])}" if "tokens" in row else "")
            cells.append(f"{cell:>26}")
        lines.append(f"{step:<10}" + "".join(cells))
    if report["drops"]:
        lines += ["", "drops per reason"]
        for code, per in report["drops"].items():
            lines.append(f"  {code:<22} {sum(per.values()):>7}  " + ", ".join(f"{s} {n}" for s, n in per.items()))
    dec = report.get("decontamination")
    if dec is not None:
        lines += ["", f"decontamination ({dec['ngram']}-word n-grams): {dec['records_dropped']} records dropped"]
        for name, b in dec["benchmarks"].items():
            lines.append(f"  {name}: {b['items']} items, dropped {b['records_dropped']} "
                         f"(overlapping {b['records_overlapping']})"
                         + (f"; {b['items_shorter_than_ngram']} items too short to match"
                            if b["items_shorter_than_ngram"] else ""))
    t = report["turns_per_conversation"]
    if t.get("conversations"):
        lines += ["", f"turns per training conversation: mean {t['mean']}, median {t['median']}, max {t['max']} "
                      f"(mean exchanges {t['mean_exchanges']}); {report['pieces']['count']} pieces after splitting "
                      f"to {report['block_length']} tokens ({report['pieces']['split_conversations']} conversations split)"]
    e = report["eval_prompts"]
    lines.append(f"eval prompts: {e.get('drawn', 0)} of {e['requested']} requested "
                 f"(BLEU <= {e['max_bleu']} vs every training query; checked {e.get('checked', 0)}, skipped "
                 + (", ".join(f"{k} {v}" for k, v in e.get("skipped", {}).items()) or "none") + ")")
    d = report["diversity"]
    lines.append(f"query diversity: mean BLEU to the most similar other query {d['mean_max_bleu']:.2f} "
                 f"(median {d['median_max_bleu']:.2f}; {d['sampled_queries']} sampled of {d['queries']} queries)")
    for b in report["budgets"]:
        lines.append(f"budget {b['label']:>6}: {_fmt(b['tokens'])} tokens in {b['records']} records "
                     f"({b['error_pct']:+.3f}%{'' if b['within_1pct'] else ' OUTSIDE 1%'}"
                     f"{', exceeds what is available' if b['exceeds_available'] else ''}) -> {b['file']}")
    return "\n".join(lines)


def _fmt(n: int) -> str:
    if n >= 10**6:
        return f"{n / 10**6:.2f}M"
    if n >= 10**4:
        return f"{n / 10**3:.1f}K"
    return str(n)
