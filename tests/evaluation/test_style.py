import math

import pytest

from easylm_imitate.evaluation import style
from easylm_imitate.evaluation.responses import Response

LISTY = "Here are options:\n\n1. First thing\n2. Second thing\n3. Third\n\nIn summary, pick one."
BULLETS = "Some points:\n- alpha\n- beta"
PLAIN = "Just one sentence with no structure."


@pytest.mark.parametrize("text, expected", [
    (LISTY, True), (BULLETS, True), (PLAIN, False), ("- only one item", False),
    ("Costs $5 - $10 and 2.5 more", False), ("* a\n* b", True), ("• a\n• b", True),
])
def test_uses_list(text, expected):
    assert style.uses_list(text) is expected


@pytest.mark.parametrize("text, expected", [
    (LISTY, True), ("Body text.\n\nOverall, it is fine.", True), ("Overall, it is fine.", False),
    ("Body.\n\nAnother paragraph.", False), ("Body.\n\n**In conclusion**, yes.", True),
])
def test_summary_paragraph(text, expected):
    assert style.has_summary_paragraph(text) is expected


def test_unigram_overlap_hand_values():
    assert style.unigram_overlap("the cat sat", "the cat sat") == pytest.approx(100.0)
    # candidate 4 words, reference 2, 2 shared: P=0.5, R=1 -> F1=2/3
    assert style.unigram_overlap("The cat sat down", "cat the") == pytest.approx(200 / 3)
    assert style.unigram_overlap("a b", "c d") == 0.0
    # clipped counts: "the the the" vs "the": P=1/3 R=1 -> F1 = 0.5
    assert style.unigram_overlap("the the the", "the") == pytest.approx(50.0)


def _pair(i, model, ref):
    msgs = ({"role": "user", "content": f"q{i}"},)
    return Response(str(i), msgs, model), Response(str(i), msgs, ref)


def test_measures_on_hand_pairs():
    pairs = [
        _pair(0, LISTY, LISTY),          # both list, both summary
        _pair(1, PLAIN, BULLETS),        # reference lists, model does not
        _pair(2, BULLETS, PLAIN),        # model lists unasked: does not count
        _pair(3, "one two three four", "one two three four five six seven eight"),
    ]
    metrics, stderr, rows = style.measure(pairs, tone=[True, False, None, True])
    assert metrics["list_when_reference_lists"] == pytest.approx(0.5)
    assert metrics["summary_when_reference_summarizes"] == pytest.approx(1.0)
    assert metrics["authoritative_tone"] == pytest.approx(2 / 3) and metrics["tone_errors"] == 1
    m = [len(style.words(p[0].response)) for p in pairs]
    r = [len(style.words(p[1].response)) for p in pairs]
    mx, my = sum(m) / 4, sum(r) / 4
    expected = sum((a - mx) * (b - my) for a, b in zip(m, r)) / math.sqrt(
        sum((a - mx) ** 2 for a in m) * sum((b - my) ** 2 for b in r))
    assert metrics["length_correlation"] == pytest.approx(expected)
    assert metrics["unigram_overlap"] == pytest.approx(
        sum(style.unigram_overlap(a.response, b.response) for a, b in pairs) / 4)
    assert [row["model_list"] for row in rows] == [True, False, True, False]


def test_no_reference_lists_gives_none():
    metrics, _, _ = style.measure([_pair(0, PLAIN, PLAIN), _pair(1, "a b", "c d e")])
    assert metrics["list_when_reference_lists"] is None and "authoritative_tone" not in metrics


@pytest.mark.parametrize("text, expected", [("Confident. [[Yes]]", True), ("[[ no ]]", False),
                                            ("[[Yes]] or [[No]]", None), ("yes", None), (None, None)])
def test_parse_tone(text, expected):
    assert style.parse_tone(text) is expected
