"""The judge through the project's journaled ChatClient against a real loopback OpenAI-style server."""

import json

from easylm_imitate.evaluation import judge, style
from easylm_imitate.evaluation.responses import Response
from easylm_imitate.imitation.client import ChatClient
from easylm_imitate.testing.openai_stub import OpenAIStub


def responder(request):
    user = request["messages"][-1]["content"]
    if "[The Start of the Response]" in user:
        return "Sounds sure of itself. [[Yes]]" if "definitely" in user else "Hedges a lot. [[No]]"
    a = user.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
    if a.startswith("garbage"):
        return "I refuse to give a verdict"
    return "A is more complete. [[A]]" if "detailed" in a else "B is more complete. [[B]]"


def test_judge_and_tone_against_stub_server(tmp_path):
    q = ({"role": "user", "content": "Explain tides."},)
    pairs = [(Response("0", q, "A detailed answer, definitely right."), Response("0", q, "Short.")),
             (Response("1", q, "Short, maybe."), Response("1", q, "A detailed answer.")),
             (Response("2", q, "garbage output"), Response("2", q, "A detailed answer."))]
    with OpenAIStub(responder=responder) as stub:
        client = ChatClient(stub.base_url, "judge", journal=str(tmp_path / "journal"))
        rows = judge.judge_pairs(client, pairs)
        tone = style.judge_tone(client, [m for m, _ in pairs])
    assert [r["outcome"] for r in rows] == ["win", "loss", "error"]
    rec = judge.summarize(rows, "m", "ref", {})
    assert rec["metrics"]["errors"] == 1 and rec["metrics"]["win"] == 1 and rec["n"] == 2
    assert tone == [True, False, False]
    json.dumps(rec)
