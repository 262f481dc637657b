"""ChatClient against the real loopback stub: journal, retries, Retry-After, limits, accounting."""

import asyncio
import json
import sqlite3
import time

import pytest

from easylm_imitate.imitation.client import (ChatClient, FatalAPIError, api_key_from_env, normalize_request,
                                             request_key)
from easylm_imitate.imitation.journal import Journal
from easylm_imitate.imitation.ratelimit import RateLimiter
from easylm_imitate.testing import Fault, FaultPlan, OpenAIStub


def ask(text, **kw):
    return dict({"messages": [{"role": "user", "content": text}]}, **kw)


def reply_for(body):
    return f"reply to {body['messages'][-1]['content']}"


def client_for(stub, tmp_path=None, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("backoff_base", 0.02)
    kw.setdefault("seed", 0)
    journal = str(tmp_path / "journal.sqlite") if tmp_path is not None else None
    return ChatClient(stub.base_url, "stub", journal=journal, **kw)


def test_results_in_order_and_journaled_successes_never_resent(tmp_path):
    requests = [ask(f"p{i}") for i in range(20)] + [ask("p3")]  # a repeat inside the batch
    with OpenAIStub(responder=reply_for, delay=0.01) as stub:
        with client_for(stub, tmp_path) as client:
            results = client.chat(requests)
            assert [r.texts for r in results] == [[f"reply to p{i}"] for i in range(20)] + [["reply to p3"]]
            assert all(r.error is None and not r.from_journal for r in results)
            assert results[3].key == results[20].key
            assert client.stats()["sent"] == 20
        assert sum(stub.prompt_counts().values()) == 20
        with client_for(stub, tmp_path) as client:  # a new process would see the same: the journal is a file
            again = client.chat(requests + [ask("new one")])
            assert all(r.from_journal for r in again[:21]) and not again[21].from_journal
            assert [r.texts for r in again[:21]] == [r.texts for r in results]
            assert client.stats()["sent"] == 1 and client.stats()["from_journal"] == 21
        assert stub.prompt_counts()["p3"] == 1 and sum(stub.prompt_counts().values()) == 21
    mode = sqlite3.connect(str(tmp_path / "journal.sqlite")).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_n_choices_usage_and_cost(tmp_path):
    with OpenAIStub(responder=lambda body: ["a b c", "d e"]) as stub, \
            client_for(stub, price_per_1k_prompt=2.0, price_per_1k_completion=10.0) as client:
        (result,) = client.chat([ask("four words of prompt", n=2, temperature=1)])
        assert result.texts == ["a b c", "d e"] and result.finish_reasons == ["stop", "stop"]
        assert result.usage == {"prompt_tokens": 4, "completion_tokens": 5}
        assert result.request == {"messages": [{"role": "user", "content": "four words of prompt"}],
                                  "n": 2, "temperature": 1.0}
        assert client.stats()["cost"] == pytest.approx((4 * 2.0 + 5 * 10.0) / 1000)
        assert stub.request_log[0].body["n"] == 2 and stub.request_log[0].body["model"] == "stub"


def test_retry_after_is_respected(tmp_path):
    plan = FaultPlan(per_attempt=[Fault("rate_limit", retry_after=1.0)])
    with OpenAIStub(responder=reply_for, faults=plan) as stub, client_for(stub, max_in_flight=4) as client:
        results = client.chat([ask(f"q{i}") for i in range(6)])
        assert all(r.texts == [f"reply to q{i}"] for i, r in enumerate(results))
        log = stub.request_log
        assert client.stats()["retries"] == 6 and client.stats()["errors"] == {"rate_limit": 6}
    for prompt in {r.prompt for r in log}:
        tries = [r for r in log if r.prompt == prompt]
        assert [t.outcome for t in tries] == ["rate_limit", "ok"]
        assert tries[1].started - tries[0].finished >= 1.0
    first_429 = min(r.finished for r in log if r.outcome == "rate_limit")
    assert min(r.started for r in log if r.outcome == "ok") - first_429 >= 1.0  # everyone paused


def test_backoff_grows_without_retry_after():
    plan = FaultPlan(per_attempt=[Fault("server_error")] * 4)
    with OpenAIStub(faults=plan) as stub, client_for(stub, backoff_base=0.1, backoff_max=10) as client:
        (result,) = client.chat([ask("x")])
        assert result.error is None
        starts = [r.started for r in stub.request_log]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    for attempt, gap in enumerate(gaps):  # jitter keeps each wait within [d/2, d] for d = 0.1 * 2**attempt
        assert 0.1 * 2 ** attempt / 2 <= gap <= 0.1 * 2 ** attempt + 0.5


def test_in_flight_limit_never_exceeded_under_faults(tmp_path):
    plan = FaultPlan(random={"rate_limit": 0.08, "server_error": 0.08, "malformed": 0.08, "drop": 0.08,
                             "slow": 0.08}, retry_after=0.1, slow_delay=0.2, seed=1)
    with OpenAIStub(responder=reply_for, faults=plan, delay=0.03) as stub, \
            client_for(stub, tmp_path, max_in_flight=3, max_retries=12) as client:
        results = client.chat([ask(f"q{i}") for i in range(60)])
        assert [r.texts for r in results] == [[f"reply to q{i}"] for i in range(60)]
        stats = client.stats()
        assert stub.max_concurrency == 3  # reached, never exceeded
        outcomes = {r.outcome for r in stub.request_log}
    assert {"rate_limit", "server_error", "malformed", "drop", "slow", "ok"} <= outcomes
    assert stats["retries"] > 0 and stats["succeeded"] == 60 and stats["failed"] == 0
    assert set(stats["errors"]) == {"rate_limit", "server_error", "malformed", "connection"}


def test_timeouts_are_retried():
    plan = FaultPlan(per_attempt=[Fault("slow", delay=3.0)])
    with OpenAIStub(responder=reply_for, faults=plan) as stub, client_for(stub, timeout=0.3) as client:
        results = client.chat([ask("a"), ask("b")])
        assert [r.texts for r in results] == [["reply to a"], ["reply to b"]]
        assert client.stats()["errors"] == {"timeout": 2}


def test_gives_up_after_max_retries_and_a_rerun_retries(tmp_path):
    def decide(body, attempt):
        return Fault("server_error") if body["messages"][0]["content"] == "cursed" else None

    with OpenAIStub(responder=reply_for, faults=FaultPlan(decide=decide)) as stub:
        with client_for(stub, tmp_path, max_retries=2) as client:
            ok, bad = client.chat([ask("fine"), ask("cursed")])
            assert ok.texts == ["reply to fine"] and bad.texts == [] and "server_error" in bad.error
            assert stub.prompt_counts(outcome=None)["cursed"] == 3
            assert client.stats()["failed"] == 1
            assert [f["attempts"] for f in client.journal.failures()] == [3]
        stub.faults = FaultPlan()
        with client_for(stub, tmp_path) as client:
            ok, bad = client.chat([ask("fine"), ask("cursed")])
            assert ok.from_journal and bad.texts == ["reply to cursed"] and client.stats()["sent"] == 1
            assert client.journal.failures() == []


def test_bad_request_is_not_retried():
    with OpenAIStub() as stub, client_for(stub) as client:
        (result,) = client.chat([{"messages": [{"role": "robot", "content": "beep"}]}])
        assert result.error.startswith("bad_request") and len(stub.request_log) == 1


def test_wrong_key_is_fatal_and_key_comes_from_env(monkeypatch):
    with OpenAIStub(api_key="sekrit") as stub:
        with client_for(stub, api_key="wrong") as client, pytest.raises(FatalAPIError, match="401"):
            client.chat([ask("x"), ask("y")])
        monkeypatch.setenv("MY_TARGET_KEY", "sekrit")
        with client_for(stub, api_key=api_key_from_env("MY_TARGET_KEY")) as client:
            assert client.chat([ask("x")])[0].texts == ["echo: x"]
    monkeypatch.delenv("MY_TARGET_KEY")
    assert api_key_from_env("MY_TARGET_KEY") is None and api_key_from_env("") is None


def test_requests_per_minute_limit():
    with OpenAIStub() as stub, client_for(stub, requests_per_minute=300) as client:  # 5 per second
        start = time.monotonic()
        client.chat([ask(f"r{i}") for i in range(15)])
        elapsed = time.monotonic() - start
        starts = sorted(r.started for r in stub.request_log)
    assert elapsed >= 1.9  # a second's worth (5) at once, then 10 more at 5/s
    for k in range(5, 15):  # the k-th start waits for (k - 4) refills of 0.2 s
        assert starts[k] - starts[0] >= (k - 4) * 0.2 - 0.05


def test_tokens_per_minute_limit_settles_with_real_usage():
    async def timeline(settle_to):
        limiter = RateLimiter(tokens_per_minute=60_000)  # 1000 tokens/s, holds 1000
        start = time.monotonic()
        for _ in range(8):
            await limiter.acquire(250)
            if settle_to is not None:
                limiter.settle(250, settle_to)
        return time.monotonic() - start

    assert asyncio.run(timeline(None)) >= 0.95  # 2000 tokens: 1000 at once, 1000 more at 1000/s
    assert asyncio.run(timeline(10)) < 0.5  # the server reported 10 tokens each: no wait


def test_request_normalisation_and_key():
    a = normalize_request(ask("x", temperature=1, n=1, stop="\n", max_tokens=None))
    assert a == {"messages": [{"role": "user", "content": "x"}], "temperature": 1.0, "stop": ["\n"]}
    assert request_key("m", a) == request_key("m", normalize_request(ask("x", temperature=1.0, stop=["\n"])))
    assert request_key("m", a) != request_key("other-model", a)
    with pytest.raises(ValueError, match="logit_bias"):
        normalize_request(ask("x", logit_bias={}))
    with pytest.raises(ValueError, match="messages"):
        normalize_request({"messages": []})
    with pytest.raises(ValueError, match="max_tokens"):
        normalize_request(ask("x", max_tokens="10"))


def test_a_journal_written_before_logprobs_and_batches_opens_and_its_answers_count(tmp_path):
    """An older journal (no logprobs/channel columns, no batch tables) keeps working: its answers
    are used, and what they cost counts toward --max_cost."""
    path = tmp_path / "old.journal"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE responses (key TEXT PRIMARY KEY, model TEXT NOT NULL, request TEXT NOT NULL, texts TEXT NOT NULL,
            usage TEXT NOT NULL, finish_reasons TEXT NOT NULL, created REAL NOT NULL);
        CREATE TABLE failures (key TEXT PRIMARY KEY, model TEXT NOT NULL, request TEXT NOT NULL, error TEXT NOT NULL,
            attempts INTEGER NOT NULL, updated REAL NOT NULL);
        CREATE TABLE claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);""")
    request = normalize_request({"messages": [{"role": "user", "content": "old"}], "max_tokens": 5})
    db.execute("INSERT INTO responses VALUES (?, 'stub', ?, '[\"kept\"]', ?, '[\"stop\"]', 0)",
               (request_key("stub", request), json.dumps(request),
                json.dumps({"prompt_tokens": 10, "completion_tokens": 20})))
    db.commit()
    db.close()
    with OpenAIStub() as stub:
        client = ChatClient(stub.base_url, "stub", journal=str(path), price_per_1k_prompt=1000,
                            price_per_1k_completion=1000, max_cost=100)
        with client:
            [result] = client.chat([request])
            assert result.texts == ["kept"] and result.from_journal and result.logprobs is None
            assert client.stats()["journal_spent"] == 30.0
        assert stub.request_log == []
    journal = Journal(path)
    assert journal.get_many([request_key("stub", request)])[request_key("stub", request)]["channel"] == "live"
    assert journal.batch_jobs() == []
    journal.close()
