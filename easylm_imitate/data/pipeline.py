"""The dataset build: sources -> canonical training mix, held-out prompts, rejects, report.

Steps (each a function over `Conv` lists; `build` runs them in this order):
read -> clean -> language -> dedup -> blocked -> hold out eval prompts -> split to blocks -> mix.
A conversation leaves the pipeline either as training data, as an eval prompt, or as a
reject with file, line, step and reason; `report.json` counts every step per source.
Everything is ordered by input order and seeded RNGs, so a fixed seed gives byte-identical
outputs.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import random
import re
from collections.abc import Iterable, Sequence

import numpy as np

from easylm_imitate.data import clean as clean_lib
from easylm_imitate.data import target_logprobs as tlp
from easylm_imitate.data.bleu import QueryIndex
from easylm_imitate.data.progress import Progress, no_bars, track
from easylm_imitate.data.readers import ConvertError, ReadOptions, convert, iter_items
from easylm_imitate.data.tokens import TokenCounter

STEPS = ("read", "parsed", "cleaned", "language", "dedup", "blocked", "target_logprobs", "held_out", "split", "mixed")


@dataclasses.dataclass
class SourceSpec:
    """One input: a name (used in ids and the report), a read recipe and a mix weight."""

    name: str
    path: str
    options: ReadOptions
    weight: float = 1.0


@dataclasses.dataclass
class Conv:
    """A conversation on its way through the build."""

    source: str
    id: str
    turns: list[dict]
    meta: dict
    lengths: list[int] | None = None
    group: int = 0  # index of the conversation a split piece came from

    def record(self) -> dict:
        """The canonical record."""
        return {"id": self.id, "source": self.source, "turns": self.turns, "meta": self.meta}


@dataclasses.dataclass
class Options:
    """Build settings (see build_config.default_config for each one's meaning)."""

    seed: int = 0
    template: str = "paper"
    block_length: int = 2048
    token_budgets: tuple[tuple[str, int], ...] = ()
    clean_text: bool = True
    html: str = "auto"
    languages: tuple[str, ...] = ("en",)
    dedup: str = "source"
    blocked_phrases: tuple[str, ...] = ()
    eval_num_prompts: int = 255
    eval_max_bleu: float = 20.0
    eval_english_only: bool = True
    eval_drop_code: bool = True
    eval_max_prompt_chars: int = 2000
    eval_min_prompt_words: int = 3
    eval_sources: tuple[str, ...] = ()
    diversity_sample: int = 1000
    mix_by: str = "size"


@dataclasses.dataclass
class Reject:
    """Why a row or conversation is not in the output."""

    file: str
    line: int
    source: str
    step: str
    code: str
    reason: str
    id: str | None = None

    def as_json(self) -> dict:
        out = {"file": self.file, "line": self.line, "source": self.source, "step": self.step,
               "code": self.code, "reason": self.reason}
        if self.id is not None:
            out["id"] = self.id
        return out


class Ledger:
    """Per-step, per-source counts of records and tokens, and the rejects."""

    def __init__(self, sources: Sequence[str]):
        self.sources = list(sources)
        self.steps: dict[str, dict[str, dict[str, int]]] = {}
        self.rejects: list[Reject] = []
        self.events: dict[str, collections.Counter] = {s: collections.Counter() for s in sources}

    def record_step(self, step: str, convs: Iterable[Conv], counter: TokenCounter | None) -> None:
        per = {s: {"records": 0, "tokens": 0} for s in self.sources}
        for conv in convs:
            per[conv.source]["records"] += 1
            if counter is not None and conv.lengths is not None:
                per[conv.source]["tokens"] += counter.total(conv.lengths)
        if counter is None:
            for row in per.values():
                row.pop("tokens")
        self.steps[step] = per

    def reject(self, conv: Conv, step: str, code: str, reason: str) -> None:
        self.rejects.append(Reject(conv.meta.get("file", ""), conv.meta.get("line", 0), conv.source, step,
                                   code, reason, conv.id))

    def drops(self) -> dict[str, dict[str, int]]:
        """code -> source -> count."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rejects:
            out.setdefault(r.code, {}).setdefault(r.source, 0)
            out[r.code][r.source] += 1
        return {code: dict(sorted(v.items())) for code, v in sorted(out.items())}


# ---------------------------------------------------------------- steps


def read_source(spec: SourceSpec, ledger: Ledger, progress: Progress = no_bars) -> tuple[list[Conv], int]:
    """Canonical conversations of one source, and the number of raw rows read."""
    convs: list[Conv] = []
    seen_ids: set[str] = set()
    rows = 0
    total = spec.options.max_items or None
    for item in track(iter_items(spec.path, spec.options), progress, f"read {spec.name}", total, "row"):
        rows += 1
        if item.error is not None:
            ledger.rejects.append(Reject(item.file, item.line, spec.name, "read", item.code or "bad_record", item.error))
            continue
        try:
            records = convert(item.obj, spec.options)
        except ConvertError as e:
            raw_id = item.obj.get("id") if isinstance(item.obj, dict) else None
            ledger.rejects.append(Reject(item.file, item.line, spec.name, "read", e.code, e.reason,
                                         f"{spec.name}:{raw_id}" if isinstance(raw_id, str) else None))
            continue
        for k, (raw_id, turns, extra) in enumerate(records):
            base = raw_id if raw_id is not None else (f"L{item.line}" if len(records) == 1 else f"L{item.line}-{k}")
            rid = f"{spec.name}:{base}"
            if rid in seen_ids:
                rid = f"{rid}@L{item.line}" + (f"-{k}" if len(records) > 1 else "")
            seen_ids.add(rid)
            convs.append(Conv(spec.name, rid, turns, {"file": item.file, "line": item.line, **extra}))
    return convs, rows


def count_tokens(convs: Sequence[Conv], counter: TokenCounter, progress: Progress = no_bars,
                 desc: str = "tokens") -> None:
    """Fill in per-turn token lengths where missing (batched, cached)."""
    todo = [c for c in convs if c.lengths is None]
    with progress(desc, len(todo)) as bar:
        for start in range(0, len(todo), 4096):
            chunk = todo[start:start + 4096]
            for conv, lengths in zip(chunk, counter.turn_lengths([c.turns for c in chunk])):
                conv.lengths = lengths
            bar.update(len(chunk))


def clean_step(convs: Sequence[Conv], options: Options, ledger: Ledger, progress: Progress = no_bars) -> list[Conv]:
    """Text cleaning, failed-exchange removal and strict alternation."""
    out = []
    for conv in track(convs, progress, "clean"):
        try:
            turns = clean_lib.clean_conversation(conv.turns, options.html, options.clean_text,
                                                 ledger.events[conv.source])
        except clean_lib.Dropped as e:
            ledger.reject(conv, "cleaned", e.code, e.reason)
            continue
        if turns != conv.turns:
            meta = conv.meta
            entries = _target_entries(conv)
            if entries is not None:  # a reply the cleaning changed no longer has the target's tokens
                meta = dict(meta, **{tlp.KEY: tlp.after_cleaning(conv.turns, turns, entries)})
            conv = dataclasses.replace(conv, turns=turns, lengths=None, meta=meta)
        out.append(conv)
    return out


def language_step(convs: Sequence[Conv], languages: Sequence[str], ledger: Ledger,
                  progress: Progress = no_bars) -> list[Conv]:
    """Keep conversations in `languages` (py3langid, offline); too little text counts as kept."""
    if not languages:
        return list(convs)
    keep = set(languages)
    out = []
    for conv in track(convs, progress, "language"):
        lang = clean_lib.language_of(conv.turns)
        if lang != "und" and lang not in keep:
            ledger.reject(conv, "language", "language", f"language {lang!r} (kept: {', '.join(languages)})")
            continue
        conv.meta["lang"] = lang
        out.append(conv)
    return out


def dedup_step(convs: Sequence[Conv], scope: str, ledger: Ledger, progress: Progress = no_bars) -> list[Conv]:
    """Drop conversations whose normalised first query was seen before (in another row).

    scope: `source` (within each source), `global` (across sources) or `off`. Records made
    from one row (HC3's answers to one question) do not count as duplicates of each other.
    """
    if scope == "off":
        return list(convs)
    if scope not in ("source", "global"):
        raise ValueError(f"dedup must be source, global or off, not {scope!r}")
    first: dict[tuple, tuple[str, str, int]] = {}
    out = []
    for conv in track(convs, progress, "dedup"):
        key = (conv.source if scope == "source" else "", clean_lib.dedup_key(conv.turns))
        origin = (conv.meta.get("file", ""), conv.meta.get("line", 0))
        seen = first.get(key)
        if seen is not None and seen[1:] != origin:
            ledger.reject(conv, "dedup", "duplicate", f"duplicate first query (first seen in {seen[0]})")
            continue
        if seen is None:
            first[key] = (conv.id, *origin)
        out.append(conv)
    return out


def blocked_step(convs: Sequence[Conv], phrases: Sequence[str], ledger: Ledger,
                 progress: Progress = no_bars) -> list[Conv]:
    """Drop conversations with a blocked phrase in a reply (off unless phrases are given)."""
    if not phrases:
        return list(convs)
    out = []
    for conv in track(convs, progress, "blocked"):
        phrase = clean_lib.blocked_phrase(conv.turns, tuple(phrases))
        if phrase is not None:
            ledger.reject(conv, "blocked", "blocked_phrase", f"reply contains blocked phrase {phrase!r}")
            continue
        out.append(conv)
    return out


def target_logprobs_step(convs: Sequence[Conv], counter: TokenCounter, ledger: Ledger,
                         progress: Progress = no_bars) -> list[Conv]:
    """Drop (code `target_logprobs`) conversations whose `meta.target_logprobs` do not
    reproduce the tokens of their replies under the build's template and tokenizer, as the
    trainer would reject them (see data/target_logprobs.py). A target token the tokenizer does
    not have raises `TokenizerMismatch` naming the record and token (another tokenizer).
    Without such conversations, or with the approximate counter (no tokenizer), nothing is
    checked and the step is not in the report."""
    if counter.approx or not any(c.meta.get(tlp.KEY) is not None for c in convs):
        return list(convs)
    from easylm_imitate.data.templates import TemplateError

    out = []
    for conv in track(convs, progress, "target logprobs"):
        if conv.meta.get(tlp.KEY) is not None:
            record = conv.record()
            try:
                ids, mask = counter.template.render(record, counter.tokenizer)
            except TemplateError:  # not this step's concern: the trainer reports it
                ids = None
            if ids is not None:
                try:
                    tlp.align(record, ids, mask, counter.tokenizer, top_k=20)
                except tlp.AlignmentError as e:
                    ledger.reject(conv, "target_logprobs", "target_logprobs", str(e))
                    continue
        out.append(conv)
    ledger.record_step("target_logprobs", out, counter)
    return out


def build_query_index(convs: Sequence[Conv], progress: Progress = no_bars) -> tuple[QueryIndex, np.ndarray, np.ndarray]:
    """Index of every non-empty user turn; (index, owner conversation, is-first-query)."""
    queries, owners, firsts = [], [], []
    for i, conv in enumerate(convs):
        first = True
        for turn in conv.turns:
            if turn["role"] == "user" and turn["text"].strip():
                queries.append(turn["text"])
                owners.append(i)
                firsts.append(first)
                first = False
    return QueryIndex(queries, progress=progress), np.asarray(owners, np.int64), np.asarray(firsts, bool)


def eval_record(conv: Conv) -> dict:
    """An eval prompt: the first user query and the target's reference reply (system kept)."""
    kept, seen_user = [], False
    for i, turn in enumerate(conv.turns):
        if turn["role"] == "system":
            kept.append(i)
        elif turn["role"] == "user" and not seen_user:
            kept.append(i)
            seen_user = True
        elif turn["role"] == "assistant" and seen_user:
            kept.append(i)
            break
    meta = dict(conv.meta)
    entries = _target_entries(conv)
    if entries is not None:
        meta[tlp.KEY] = tlp.select_turns(conv.turns, kept, entries)
    return {"id": conv.id, "source": conv.source, "turns": [conv.turns[i] for i in kept], "meta": meta}


def _target_entries(conv: Conv) -> list | None:
    """The conversation's `meta.target_logprobs` when it has one entry per assistant turn
    (anything else is left as it is, for the trainer to reject with the reason)."""
    entries = conv.meta.get(tlp.KEY)
    if not isinstance(entries, list) or len(entries) != sum(t["role"] == "assistant" for t in conv.turns):
        return None
    return entries


def hold_out(convs: Sequence[Conv], index: QueryIndex, owners: np.ndarray, options: Options,
             progress: Progress = no_bars) -> tuple[list[int], dict]:
    """Indices of conversations held out as eval prompts, and why candidates were skipped.

    Candidates are drawn in a seeded order; one is skipped if its first query is too long or
    short, (flag) code or about code, (flag) not English, or has sentence BLEU above
    `eval_max_bleu` against any user query of any other conversation (a superset of the
    final training queries).
    """
    skipped = collections.Counter()
    stats = {"requested": options.eval_num_prompts, "max_bleu": options.eval_max_bleu}
    if options.eval_num_prompts <= 0:
        return [], {**stats, "drawn": 0, "checked": 0, "skipped": {}}
    allowed = set(options.eval_sources)
    order = [i for i, c in enumerate(convs) if not allowed or c.source in allowed]
    random.Random(f"{options.seed}:eval").shuffle(order)
    chosen, checked = [], 0
    with progress("hold out", options.eval_num_prompts, "prompt") as bar:
        for i in order:
            if len(chosen) >= options.eval_num_prompts:
                break
            checked += 1
            bar.set_postfix(checked=checked, refresh=False)
            if _eval_skip(convs[i], i, index, owners, options, skipped):
                continue
            chosen.append(i)
            bar.update()
    return sorted(chosen), {**stats, "drawn": len(chosen), "checked": checked, "skipped": dict(sorted(skipped.items()))}


def _eval_skip(conv: Conv, i: int, index: QueryIndex, owners: np.ndarray, options: Options,
               skipped: collections.Counter) -> bool:
    """True (counting the reason in `skipped`) if conversation i cannot be an eval prompt."""
    prompt = clean_lib.first_query(conv.turns)
    if len(prompt) > options.eval_max_prompt_chars:
        reason = "too_long"
    elif len(prompt.split()) < options.eval_min_prompt_words:
        reason = "too_short"
    elif options.eval_drop_code and clean_lib.looks_like_code(prompt):
        reason = "code"
    elif options.eval_english_only and clean_lib.language_of_text(prompt, min_letters=1) != "en":
        reason = "non_english"
    elif index.first_above(prompt, options.eval_max_bleu, exclude=owners == i) is not None:
        reason = "similar_to_training"
    else:
        return False
    skipped[reason] += 1
    return True


def split_step(convs: Sequence[Conv], counter: TokenCounter, block_length: int,
               progress: Progress = no_bars) -> list[Conv]:
    """Turn-aligned pieces of at most `block_length` tokens (see clean.split_turns)."""
    out = []
    for g, conv in enumerate(track(convs, progress, "split")):
        pieces = clean_lib.split_turns(conv.turns, conv.lengths, counter.base, block_length)
        if len(pieces) == 1:
            out.append(dataclasses.replace(conv, group=g))
            continue
        for k, idx in enumerate(pieces):
            meta = dict(conv.meta, part=k + 1, parts=len(pieces))
            entries = _target_entries(conv)
            if entries is not None:
                meta[tlp.KEY] = tlp.select_turns(conv.turns, idx, entries)
            out.append(Conv(conv.source, f"{conv.id}#{k + 1}", [conv.turns[i] for i in idx], meta,
                            [conv.lengths[i] for i in idx], g))
    return out


def mix_order(pieces: Sequence[Conv], tokens: Sequence[int], weights: dict[str, float], seed: int,
              progress: Progress = no_bars) -> list[int]:
    """Order of `pieces` in the mix: every prefix holds the sources in proportion to weights.

    Conversations (their pieces stay together) are shuffled per source with the seed, then
    interleaved: the next conversation comes from the source furthest below its token share.
    """
    groups: dict[str, dict[int, list[int]]] = {}
    for i, piece in enumerate(pieces):
        groups.setdefault(piece.source, {}).setdefault(piece.group, []).append(i)
    queues = {}
    for source, by_group in groups.items():
        convs = list(by_group.values())
        random.Random(f"{seed}:{source}").shuffle(convs)
        queues[source] = convs
    names = [s for s in weights if s in queues]
    heap = [(0.0, n, name) for n, name in enumerate(names)]
    heapq.heapify(heap)
    taken = {name: 0 for name in names}
    position = {name: 0 for name in names}
    order: list[int] = []
    with progress("mix", len(pieces), "piece") as bar:
        while heap:
            _, n, name = heapq.heappop(heap)
            group = queues[name][position[name]]
            position[name] += 1
            order.extend(group)
            taken[name] += sum(tokens[i] for i in group)
            if position[name] < len(queues[name]):
                heapq.heappush(heap, (taken[name] / weights[name], n, name))
            bar.update(len(group))
    return order


def fit_budgets(order: list[int], tokens: Sequence[int], budgets: Sequence[int], window: int = 2000,
                tolerance: float = 0.002) -> tuple[list[int], list[int]]:
    """Adjust the mix order so each budget's prefix lands on it; (order, prefix length per budget).

    Budgets are taken in increasing order. For each, the order is followed while it fits;
    then, while the gap is above `tolerance` of the budget, the largest record among the next
    `window` that fits the gap (overshooting by at most the tolerance) is moved forward. Only
    records after the previous budget's prefix move, so every smaller subset stays a prefix
    of the larger ones. Finally the prefix length closest to the budget is taken.
    """
    order = list(order)
    lengths, pos, total = [], 0, 0
    for budget in budgets:
        slack = tolerance * budget
        while pos < len(order) and total + tokens[order[pos]] <= budget:
            total += tokens[order[pos]]
            pos += 1
        while pos < len(order) and budget - total > slack:
            gap = budget - total + slack
            best, best_tokens = -1, 0
            for j in range(pos, min(len(order), pos + window)):
                t = tokens[order[j]]
                if best_tokens < t <= gap:
                    best, best_tokens = j, t
            if best < 0:
                break
            order.insert(pos, order.pop(best))
            total += best_tokens
            pos += 1
        if pos < len(order) and abs(total + tokens[order[pos]] - budget) < abs(total - budget):
            total += tokens[order[pos]]
            pos += 1
        lengths.append(pos)
    return order, lengths


def parse_budgets(spec: str) -> tuple[tuple[str, int], ...]:
    """"300K,20M,1.5B" -> (("300K", 300000), ...), sorted by size."""
    out = []
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KkMmBbGg]?)", part)
        if not match:
            raise ValueError(f"bad token budget {part!r} (use e.g. 300K, 20M, 150M)")
        scale = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}[match.group(2).lower()]
        value = int(round(float(match.group(1)) * scale))
        if value <= 0:
            raise ValueError(f"token budget must be positive: {part!r}")
        out.append((part.upper(), value))
    return tuple(sorted(out, key=lambda x: x[1]))


def turn_stats(convs: Sequence[Conv]) -> dict:
    """Turns per conversation: mean, median, max and a histogram (exchanges counted too)."""
    turns = np.asarray([len(c.turns) for c in convs], np.int64)
    if not len(turns):
        return {"conversations": 0}
    exchanges = [sum(t["role"] == "assistant" for t in c.turns) for c in convs]
    hist = collections.Counter(int(t) for t in turns)
    return {"conversations": len(turns), "mean": round(float(turns.mean()), 3), "median": float(np.median(turns)),
            "max": int(turns.max()), "mean_exchanges": round(float(np.mean(exchanges)), 3),
            "histogram": {str(k): hist[k] for k in sorted(hist)}}
