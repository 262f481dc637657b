import dataclasses
import json

import pytest

from easylm_imitate.evaluation import judge
from easylm_imitate.evaluation.responses import Response, load_responses, paired


@pytest.mark.parametrize("text, expected", [
    ("Explanation... [[A]]", "A"), ("[[B]]", "B"), ("It's a tie. [[C]]", "tie"), ("[[ a ]]", "A"),
    ("First [[A]], then on reflection [[B]]", None),  # conflicting: error, not a win
    ("A is better", None), ("", None), (None, None), ("[[A]] ... final: [[A]]", "A"), ("[[D]]", None),
])
def test_parse_verdict(text, expected):
    assert judge.parse_verdict(text) == expected


@pytest.mark.parametrize("first, second, outcome", [
    ("A", "B", "win"), ("B", "A", "loss"), ("tie", "tie", "tie"),
    ("A", "A", "tie"),  # position bias: flip counts as a tie
    ("A", "tie", "tie"), (None, "B", "error"), ("A", None, "error"),
])
def test_combine(first, second, outcome):
    assert judge.combine(first, second) == outcome


@dataclasses.dataclass
class Result:
    texts: list
    error: str | None = None


class ScriptedClient:
    """Answers each request with the verdict the script gives for (model answer, position)."""

    def __init__(self, script):
        self.script, self.requests = script, []

    def chat(self, requests):
        self.requests += requests
        out = []
        for r in requests:
            user = r["messages"][1]["content"]
            a = user.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
            reply = self.script[a]
            out.append(Result([], reply[6:]) if reply.startswith("ERROR:") else Result([reply]))
        return out


def _pair(i, model, ref):
    msgs = ({"role": "user", "content": f"question {i}"},)
    return Response(str(i), msgs, model), Response(str(i), msgs, ref)


def test_judge_pairs_and_summary():
    script = {  # keyed by whichever answer is shown as A
        "m0 good": "[[A]]", "r0": "[[B]]",        # model wins both orders
        "m1": "[[B]]", "r1 great": "[[A]]",      # model loses both orders
        "m2": "[[A]]", "r2": "[[A]]",            # position bias -> tie, flip
        "m3": "I cannot decide", "r3": "[[B]]",  # malformed -> error
        "m4": "ERROR:HTTP 500", "r4": "[[B]]",   # failed request -> error
        "m5 long answer here": "[[C]]", "r5": "[[C]]",  # genuine tie
    }
    pairs = [_pair(0, "m0 good", "r0"), _pair(1, "m1", "r1 great"), _pair(2, "m2", "r2"), _pair(3, "m3", "r3"),
             _pair(4, "m4", "r4"), _pair(5, "m5 long answer here", "r5")]
    client = ScriptedClient(script)
    rows = judge.judge_pairs(client, pairs)
    assert len(client.requests) == 12
    assert client.requests[0]["messages"][1]["content"].startswith("[User Question]\nquestion 0\n")
    assert [r["outcome"] for r in rows] == ["win", "loss", "tie", "error", "error", "tie"]
    assert [r["flip"] for r in rows] == [False, False, True, False, False, False]
    rec = judge.summarize(rows, "imitation", "chatgpt", {})
    m = rec["metrics"]
    assert (m["win"], m["tie"], m["loss"], m["errors"]) == (1, 2, 1, 2)
    assert m["win_rate"] == 0.25 and m["adjusted_win_rate"] == 0.5 and m["flip_rate"] == 0.25
    assert m["model_mean_words"] == pytest.approx((2 + 1 + 1 + 1 + 1 + 4) / 6)
    assert rec["n"] == 4 and rec["reference"] == "chatgpt"


def test_load_prompt_validates(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"system": "s", "user_template": "{question} {answer_a}"}))
    with pytest.raises(ValueError, match=r"p.json: user_template lacks \{answer_b\}"):
        judge.load_prompt(str(bad))


def test_responses_file_forms_and_rejects(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "a", "source": "x", "turns": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "yo"}]}),
        json.dumps({"id": "b", "prompt": "p", "response": "r"}),
        json.dumps({"id": "a", "prompt": "dup", "response": "r"}),
        json.dumps({"id": "c", "turns": [{"role": "user", "text": "no reply"}]}),
        "[1, 2]",
    ]) + "\n")
    resp, rejects = load_responses(str(path))
    assert list(resp) == ["a", "b"] and resp["a"].question == "hi" and resp["a"].response == "yo"
    assert [r["line"] for r in rejects] == [3, 4, 5] and "duplicate id 'a'" in rejects[0]["reason"]
    assert [m.id for m, _ in paired({"b": resp["b"]}, resp)] == ["b"]


def test_judge_and_style_count_words_alike():
    from easylm_imitate.evaluation import style

    pairs = [_pair(0, "Hello, world! It's -- fine.", "Yes."), _pair(1, "One two\nthree (four)", "- a\n- b")]
    rows = judge.judge_pairs(ScriptedClient({"Hello, world! It's -- fine.": "[[A]]", "Yes.": "[[B]]",
                                             "One two\nthree (four)": "[[C]]", "- a\n- b": "[[C]]"}), pairs)
    judged = judge.summarize(rows, "m", "r", {})["metrics"]
    styled, _, _ = style.measure(pairs)
    assert judged["model_mean_words"] == styled["model_mean_words"] == pytest.approx((4 + 4) / 2)
    assert judged["reference_mean_words"] == styled["reference_mean_words"] == pytest.approx((1 + 2) / 2)


def test_judge_max_tokens_reaches_every_request():
    client = ScriptedClient({"m": "[[A]]", "r": "[[B]]"})
    judge.judge_pairs(client, [_pair(0, "m", "r")], max_tokens=16)
    assert [r["max_tokens"] for r in client.requests] == [16, 16]
    judge.judge_pairs(client, [_pair(0, "m", "r")])
    assert client.requests[-1]["max_tokens"] == judge.DEFAULT_MAX_TOKENS < 1024
