import pytest

from easylm_imitate.evaluation import nq


@pytest.mark.parametrize("pred, golds, expected", [
    ("The Eiffel Tower", ["eiffel tower"], True),
    ("an apple", ["Apple"], True),
    ("  Paris. ", ["paris"], True),
    ("U.S.A.", ["USA"], True),
    ("george washington", ["George Washington", "Washington"], True),
    ("Washington", ["George Washington", "washington"], True),
    ("theodore roosevelt", ["roosevelt"], False),
    ("1,000", ["1000"], True),
    ("Rock 'n' Roll", ["rock n roll"], True),
    ("there", ["the re"], False),  # articles only as whole words
    ("", ["anything"], False),
    ("Abraham  Lincoln", ["abraham lincoln"], True),
])
def test_exact_match_table(pred, golds, expected):
    assert nq.exact_match(pred, golds) is expected


def test_normalize_answer():
    assert nq.normalize_answer("The  Quick, brown FOX!") == "quick brown fox"
    assert nq.normalize_answer("A an the") == ""


def test_prompt_format():
    shots = [nq.QA("who wrote hamlet", ("William Shakespeare", "Shakespeare")), nq.QA("capital of france?", ("Paris",))]
    assert nq.build_prompt(shots, "when was the moon landing") == (
        "Q: who wrote hamlet?\nA: William Shakespeare\n"
        "Q: capital of france?\nA: Paris\n"
        "Q: when was the moon landing?\nA:")
    assert nq.build_prompt([], "x") == "Q: x?\nA:"


def test_load_jsonl_sets_aside_bad_lines(tmp_path):
    path = tmp_path / "nq.jsonl"
    path.write_text('{"question": "q1", "answer": ["a"]}\nnot json\n{"question": "", "answer": ["a"]}\n'
                    '{"question": "q2", "answer": []}\n{"question": "q3", "answer": "single"}\n')
    items, rejects = nq.load_jsonl(str(path))
    assert [q.question for q in items] == ["q1", "q3"] and items[1].answers == ("single",)
    assert [(r["line"], r["reason"].split(" ")[0]) for r in rejects] == [(2, "invalid"), (3, "field"), (4, "field")]
