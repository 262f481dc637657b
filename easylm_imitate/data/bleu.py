"""Sentence BLEU (sacrebleu's) of one text against many, fast enough for 50K x 255.

`QueryIndex` tokenizes every reference query once (sacrebleu's 13a tokenizer) and keeps an
inverted index per n-gram order (1..4): n-gram key -> (query, count). For a hypothesis it
sums the clipped matches `min(hyp count, ref count)` over the postings of the hypothesis's
n-grams, for all queries at once, and evaluates sacrebleu's sentence-BLEU formula (exp
smoothing, effective order, brevity penalty) vectorized over the queries. This is the same
statistic sacrebleu computes, so it never underestimates:

- unigram and bigram keys are exact; 3- and 4-gram keys are 64-bit hashes, and a hash
  collision can only merge n-grams, which can only raise `min` sums (min(a+b, c+d) >=
  min(a, c) + min(b, d)), and BLEU never decreases when a match count rises;
- a query sharing no unigram with the hypothesis scores 0 in sacrebleu (its early exit) and
  gets no posting here.

Pairs whose vectorized score comes within `MARGIN` of a threshold are confirmed with
`sacrebleu.sentence_bleu` itself, so decisions are sacrebleu's exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from easylm_imitate.data.progress import Progress, no_bars, track

MAX_ORDER = 4
MARGIN = 1e-6
_MIX = np.uint64(0x9E3779B97F4A7C15)


@functools.lru_cache(maxsize=1)
def _bleu():
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize="13a", smooth_method="exp", effective_order=True)


def bleu_tokens(text: str) -> list[str]:
    """sacrebleu's sentence-BLEU tokens of `text` (13a tokenizer, case kept)."""
    return _bleu()._preprocess_segment(text).split()


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """sacrebleu's sentence BLEU (0..100) of `hypothesis` against one reference."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, [reference]).score)


def bleu_from_stats(correct: np.ndarray, hyp_len: int, ref_len: np.ndarray) -> np.ndarray:
    """sacrebleu's sentence BLEU for one hypothesis vs many refs from match counts.

    `correct` is (MAX_ORDER, n) clipped matches; refs with no unigram match score 0.
    """
    n = correct.shape[1]
    out = np.zeros(n, np.float64)
    live = correct[0] > 0
    if hyp_len <= 0 or not live.any():
        return out
    c = correct[:, live].astype(np.float64)
    r = ref_len[live].astype(np.float64)
    bp = np.where(hyp_len < r, np.exp(1.0 - r / hyp_len), 1.0)
    eff = min(MAX_ORDER, hyp_len)
    smooth = np.ones(c.shape[1])
    log_sum = np.zeros(c.shape[1])
    for k in range(eff):
        total = hyp_len - k
        zero = c[k] == 0
        smooth = np.where(zero, smooth * 2.0, smooth)
        p = np.where(zero, 100.0 / (smooth * total), 100.0 * c[k] / total)
        log_sum += np.log(p)
    out[live] = bp * np.exp(log_sum / eff)
    return out


def _keys(ids: np.ndarray, n: int, mask: int | None) -> np.ndarray:
    """Key of the n-gram starting at each position of `ids` (length len(ids) - n + 1)."""
    m = len(ids) - n + 1
    if m <= 0:
        return np.zeros(0, np.uint64)
    u = ids.astype(np.uint64)
    if n == 1:
        keys = u[:m].copy()
    elif n == 2:
        keys = (u[:m] << np.uint64(32)) | u[1:m + 1]
    else:
        keys = u[:m].copy()
        with np.errstate(over="ignore"):
            for j in range(1, n):
                keys = keys * _MIX + u[j:m + j]
    if mask is not None:
        keys &= np.uint64(mask)
    return keys


class QueryIndex:
    """Reference queries indexed for fast sentence BLEU of any hypothesis against all of them.

    `hash_mask` (tests only) truncates keys to force collisions; `progress` shows the
    tokenization of the queries.
    """

    def __init__(self, queries: Sequence[str], hash_mask: int | None = None, progress: Progress = no_bars):
        self.queries = list(queries)
        self._mask = hash_mask
        self.vocab: dict[str, int] = {}
        vocab = self.vocab
        token_lists = [bleu_tokens(q) for q in track(self.queries, progress, "bleu index", unit="query")]
        self.lengths = np.fromiter((len(t) for t in token_lists), np.int64, len(token_lists))
        flat = np.fromiter((vocab.setdefault(tok, len(vocab) + 1) for toks in token_lists for tok in toks),
                           np.int64, int(self.lengths.sum()))
        qid = np.repeat(np.arange(len(self.queries), dtype=np.int64), self.lengths)
        self._postings = []
        for n in range(1, MAX_ORDER + 1):
            keys = _keys(flat, n, hash_mask)
            owner = qid[:len(keys)]
            same = owner == qid[n - 1:n - 1 + len(keys)]
            keys, owner = keys[same], owner[same]
            order = np.lexsort((owner, keys))
            keys, owner = keys[order], owner[order]
            if len(keys):
                change = np.r_[True, (keys[1:] != keys[:-1]) | (owner[1:] != owner[:-1])]
                starts = np.flatnonzero(change)
                counts = np.diff(np.r_[starts, len(keys)])
                keys, owner = keys[starts], owner[starts]
            else:
                counts = np.zeros(0, np.int64)
            self._postings.append((keys, owner.astype(np.int32), counts.astype(np.int32)))

    def __len__(self) -> int:
        return len(self.queries)

    def match_counts(self, hyp_tokens: Sequence[str]) -> np.ndarray:
        """(MAX_ORDER, len(self)) clipped n-gram matches of the hypothesis with every query."""
        ids = np.fromiter((self.vocab.get(t, 0) for t in hyp_tokens), np.int64, len(hyp_tokens))
        correct = np.zeros((MAX_ORDER, len(self.queries)), np.float64)
        for n in range(1, MAX_ORDER + 1):
            keys = _keys(ids, n, self._mask)
            if not len(keys):
                break
            known = np.ones(len(keys), bool)
            for j in range(n):  # n-grams with a token no query has cannot match
                known &= ids[j:j + len(keys)] > 0
            keys = keys[known]
            if not len(keys):
                continue
            keys, hyp_counts = np.unique(keys, return_counts=True)
            pk, pq, pc = self._postings[n - 1]
            left = np.searchsorted(pk, keys, "left")
            right = np.searchsorted(pk, keys, "right")
            sizes = right - left
            total = int(sizes.sum())
            if not total:
                continue
            offsets = np.repeat(left - np.r_[0, np.cumsum(sizes)[:-1]], sizes)
            idx = offsets + np.arange(total)
            matched = np.minimum(pc[idx], np.repeat(hyp_counts, sizes))
            correct[n - 1] = np.bincount(pq[idx], weights=matched, minlength=len(self.queries))
        return correct

    def scores(self, hypothesis: str) -> np.ndarray:
        """Sentence BLEU of `hypothesis` against every query (vectorized; equals sacrebleu's)."""
        tokens = bleu_tokens(hypothesis)
        return bleu_from_stats(self.match_counts(tokens), len(tokens), self.lengths)

    def first_above(self, hypothesis: str, threshold: float, exclude: np.ndarray | None = None) -> tuple[int, float] | None:
        """(query index, sacrebleu score) of a query with BLEU > threshold, or None.

        `exclude` is a boolean mask of queries not to compare with.
        """
        scores = self.scores(hypothesis)
        if exclude is not None:
            scores[exclude] = 0.0
        near = np.flatnonzero(scores > threshold - MARGIN)
        for i in near[np.argsort(-scores[near], kind="stable")]:
            exact = sentence_bleu(hypothesis, self.queries[i])
            if exact > threshold:
                return int(i), exact
        return None

    def most_similar(self, i: int, allowed: np.ndarray | None = None) -> tuple[int, float]:
        """(index, sacrebleu score) of the query most similar to query i among the others."""
        scores = self.scores(self.queries[i])
        scores[i] = -1.0
        if allowed is not None:
            scores[~allowed] = -1.0
        best = int(np.argmax(scores)) if len(scores) else -1
        if best < 0 or scores[best] <= 0:
            return best, 0.0
        return best, sentence_bleu(self.queries[i], self.queries[best])


def query_diversity(index: QueryIndex, sample: Sequence[int], allowed: np.ndarray | None = None,
                    progress: Progress = no_bars) -> dict:
    """Mean BLEU of each sampled query against its most similar other query (the paper's statistic)."""
    best = [index.most_similar(i, allowed)[1] for i in track(sample, progress, "diversity", unit="query")]
    values = np.asarray(best, np.float64)
    return {"mean_max_bleu": round(float(values.mean()), 4) if len(values) else 0.0,
            "median_max_bleu": round(float(np.median(values)), 4) if len(values) else 0.0,
            "sampled_queries": len(values), "queries": int(allowed.sum()) if allowed is not None else len(index)}
