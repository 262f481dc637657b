"""The loopback OpenAI stub: protocol, injected faults, request log and concurrency record."""

import threading
import time

import httpx
import openai
import pytest

from easylm_imitate.testing import Fault, FaultPlan, OpenAIStub

MESSAGES = [{"role": "user", "content": "hello there"}]


def _post(stub, body, timeout=5.0, headers=None):
    return httpx.post(stub.base_url + "/chat/completions", json=body, timeout=timeout, headers=headers)


def test_answers_like_openai_and_counts_per_prompt():
    with OpenAIStub(responder=lambda body: ["one", "two"] if body.get("n") == 2 else "solo") as stub:
        client = openai.OpenAI(base_url=stub.base_url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="stub", messages=MESSAGES, n=2)
        assert [c.message.content for c in reply.choices] == ["one", "two"]
        assert reply.usage.prompt_tokens == 2 and reply.usage.completion_tokens == 2
        assert client.chat.completions.create(model="stub", messages=MESSAGES).choices[0].message.content == "solo"
        assert [m.id for m in client.models.list().data] == ["stub"]
        assert stub.prompt_counts() == {"hello there": 2}
        assert [r.attempt for r in stub.request_log] == [1, 1]  # different bodies (n differs)
    with pytest.raises(RuntimeError):
        stub.base_url  # stopped


def test_each_fault_kind_looks_right_on_the_wire():
    plan = FaultPlan(per_attempt=[Fault("rate_limit", retry_after=7), Fault("server_error"), Fault("malformed"),
                                  Fault("drop"), Fault("slow", delay=0.6), None])
    body = {"model": "stub", "messages": MESSAGES}
    with OpenAIStub(faults=plan) as stub:
        r = _post(stub, body)
        assert r.status_code == 429 and r.headers["retry-after"] == "7"
        assert _post(stub, body).status_code == 500
        r = _post(stub, body)
        assert r.status_code == 200
        with pytest.raises(ValueError):
            r.json()
        with pytest.raises(httpx.RemoteProtocolError):
            _post(stub, body)
        start = time.monotonic()
        assert _post(stub, body).json()["choices"][0]["message"]["content"] == "echo: hello there"
        assert time.monotonic() - start >= 0.6
        assert _post(stub, body).status_code == 200
        outcomes = [(r.outcome, r.attempt) for r in stub.request_log]
    assert outcomes == [("rate_limit", 1), ("server_error", 2), ("malformed", 3), ("drop", 4), ("slow", 5), ("ok", 6)]


def test_rejects_bad_requests_and_wrong_keys():
    with OpenAIStub(api_key="sekrit") as stub:
        good = {"Authorization": "Bearer sekrit"}
        assert _post(stub, {"model": "stub", "messages": MESSAGES}).status_code == 401
        assert _post(stub, {"model": "stub", "messages": []}, headers=good).status_code == 400
        assert _post(stub, {"model": "stub", "messages": [{"role": "robot", "content": "x"}]},
                     headers=good).status_code == 400
        assert _post(stub, {"model": "stub", "messages": MESSAGES}, headers=good).status_code == 200
        assert [r.outcome for r in stub.request_log] == ["unauthorized", "bad_request", "bad_request", "ok"]


def test_records_max_concurrency():
    with OpenAIStub(delay=0.3) as stub:
        threads = [threading.Thread(target=_post, args=(stub, {"model": "stub", "messages": MESSAGES})) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert stub.max_concurrency == 5
        _post(stub, {"model": "stub", "messages": MESSAGES})
        stub.reset()
        assert stub.max_concurrency == 0 and stub.request_log == []


def test_abandoned_slow_request_stops_counting():
    with OpenAIStub(faults=FaultPlan(per_attempt=[Fault("slow", delay=5)])) as stub:
        with pytest.raises(httpx.ReadTimeout):
            _post(stub, {"model": "stub", "messages": MESSAGES}, timeout=0.3)
        deadline = time.monotonic() + 2
        while stub.request_log[0].outcome != "client_gone" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stub.request_log[0].outcome == "client_gone"


def test_random_faults_follow_probabilities():
    plan = FaultPlan(random={"server_error": 0.5}, seed=3)
    with OpenAIStub(faults=plan) as stub, httpx.Client() as http:
        codes = [http.post(stub.base_url + "/chat/completions",
                           json={"model": "stub", "messages": [{"role": "user", "content": str(i)}]}).status_code
                 for i in range(60)]
    assert 15 <= codes.count(500) <= 45 and set(codes) == {200, 500}
    with pytest.raises(ValueError):
        FaultPlan(random={"meteor": 0.1})


def test_dry_run_server_fault_flag_parsing():
    from easylm_imitate.testing.serve_stub import parse_faults

    assert parse_faults(["rate_limit:0.1", "drop:0.05"]) == {"rate_limit": 0.1, "drop": 0.05}
    for bad in (["meteor:0.1"], ["drop"], ["drop:lots"]):
        with pytest.raises(ValueError, match="--faults item"):
            parse_faults(bad)
