"""The indexed sentence BLEU equals sacrebleu's and its prefilter never misses a pair."""

from __future__ import annotations

import random

import numpy as np
import pytest
import sacrebleu

from easylm_imitate.data.bleu import QueryIndex, query_diversity

EDGE_CASES = ["", "a", "the", "the the the the", "a b", "a b c", "a b c d", "What is it?", "what is it ?",
              "x-\ny &amp; z", "<skipped> hello world", "日本語 の テキスト", "1 / 1 2 / 2", "It's 5.0% (ok).",
              "the cat sat on the mat", "the cat sat on the mat .", "cat the on sat mat the"]


def _sentences(rng, n, vocab="the a cat dog sat on mat . , ? what is how do I you it - & ( )".split()):
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 14))) for _ in range(n)]


@pytest.mark.parametrize("hash_mask", [None, 0xFF, 0x3])
def test_index_scores_equal_sacrebleu_and_never_underestimate(hash_mask):
    """Exact without collisions; with keys truncated to force collisions, an upper bound."""
    rng = random.Random(0)
    refs = _sentences(rng, 250) + EDGE_CASES
    hyps = _sentences(rng, 60) + EDGE_CASES
    index = QueryIndex(refs, hash_mask=hash_mask)
    worst = 0.0
    for hyp in hyps:
        scores = index.scores(hyp)
        exact = np.array([sacrebleu.sentence_bleu(hyp, [r]).score for r in refs])
        assert (scores >= exact - 1e-9).all(), hyp
        if hash_mask is None:
            worst = max(worst, float(np.abs(scores - exact).max()))
    assert worst < 1e-9


def test_first_above_agrees_with_brute_force():
    rng = random.Random(1)
    refs = _sentences(rng, 300)
    index = QueryIndex(refs)
    for hyp in _sentences(rng, 80) + refs[:20]:
        brute = [i for i, r in enumerate(refs) if sacrebleu.sentence_bleu(hyp, [r]).score > 20.0]
        hit = index.first_above(hyp, 20.0)
        assert (hit is None) == (not brute)
        if hit is not None:
            assert hit[0] in brute and hit[1] == pytest.approx(sacrebleu.sentence_bleu(hyp, [refs[hit[0]]]).score)
        exclude = np.zeros(len(refs), bool)
        exclude[brute] = True
        assert index.first_above(hyp, 20.0, exclude=exclude) is None


def test_query_diversity_is_the_mean_best_match():
    queries = ["how do I boil an egg", "how do I boil an egg quickly", "what is the capital of France",
               "tell me a joke about cats"]
    index = QueryIndex(queries)
    got = query_diversity(index, range(len(queries)))
    best = []
    for i, q in enumerate(queries):
        best.append(max(sacrebleu.sentence_bleu(q, [r]).score for j, r in enumerate(queries) if j != i))
    assert got["mean_max_bleu"] == pytest.approx(np.mean(best), abs=1e-3)
    assert got["sampled_queries"] == 4
