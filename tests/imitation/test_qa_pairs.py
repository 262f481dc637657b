"""Seeds, the NQ-synthetic prompt, Q:/A: parsing, normalisation and the contamination list."""

import json

import pytest

from easylm_imitate.fileio import LineError
from easylm_imitate.imitation.contamination import load_eval_questions
from easylm_imitate.imitation.qa_pairs import QAPair, build_prompt, load_seeds, normalize_question, parse_qa


def test_shipped_seeds_and_prompt():
    seeds = load_seeds()
    assert len(seeds) == 10 and seeds[0] == QAPair("who sang who wants to be a millionaire in high society?",
                                                    "Frank Sinatra")
    prompt = build_prompt(seeds[:5], 7)
    assert all(f"Q: {s.question}\nA: {s.answer}" in prompt for s in seeds[:5])
    assert seeds[5].question not in prompt
    assert "Write 7 new question-answer pairs" in prompt and "lowercase" in prompt and "concise" in prompt


def test_seed_file_errors_name_the_line(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n{"question": "q2"}\n')
    with pytest.raises(LineError, match=r"seeds.jsonl:2: .*'answer'"):
        load_seeds(str(path))


def test_parses_messy_replies_and_counts_malformed_pieces():
    text = "\n".join([
        "Sure! Here are some pairs:", "",
        "1. **Q:** Who wrote the novel Dune?", "**A:** Frank Herbert",
        "2) Q: when did the berlin wall fall? A: 1989",
        "- Question 3: what is the capital of peru", "- Answer 3: Lima",
        "Q: orphan question without answer",
        "Q: who painted the mona lisa", "A: Leonardo", "da Vinci",
        "A: an answer nobody asked for",
        "Q:", "A: empty question",
        "Q: why", "A: this answer goes on and on for many more words than any concise answer should ever need",
        "", "I hope these help!",
    ])
    pairs, malformed = parse_qa(text)
    assert pairs == [QAPair("who wrote the novel dune?", "Frank Herbert"),
                     QAPair("when did the berlin wall fall?", "1989"),
                     QAPair("what is the capital of peru", "Lima")]
    assert malformed == {"question_without_answer": 1, "multi_line": 1, "answer_without_question": 1,
                         "empty_question": 1, "answer_too_long": 1, "stray_text": 1}
    assert parse_qa("") == ([], {})


def test_normalize_question():
    assert normalize_question("  Who wrote \u201cDune\u201d?? ") == "who wrote dune"
    assert normalize_question("WHO  wrote, dune") == normalize_question("who wrote dune?")


def test_eval_questions_from_several_formats(tmp_path):
    path = tmp_path / "eval.jsonl"
    lines = [json.dumps({"question": "Who wrote Dune?", "answer": ["Frank Herbert"]}),
             json.dumps({"prompt": "capital of peru"}),
             json.dumps({"id": "r", "source": "s", "turns": [{"role": "system", "text": "be brief"},
                                                               {"role": "user", "text": "when did rome fall"}]}),
             "{not json", json.dumps({"answer": "no question"})]
    path.write_text("\n".join(lines) + "\n")
    assert load_eval_questions(str(path)) == {"who wrote dune", "capital of peru", "when did rome fall"}
    (tmp_path / "empty.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(ValueError, match="no questions"):
        load_eval_questions(str(tmp_path / "empty.jsonl"))
