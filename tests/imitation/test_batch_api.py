"""`collect --batch_api` through the official openai client against the stub's /v1/files and
/v1/batches: failed and expired lines retried, kill -9 at each step then a rerun, nq_synthetic."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from easylm_imitate.testing import Fault, FaultPlan, OpenAIStub
from easylm_imitate.testing.responders import qa_responder

PROMPTS = [f"question number {i}" for i in range(12)]


def _prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    return path


def _cmd(stub, prompts, out, *extra):
    return [sys.executable, "-m", "easylm_imitate.imitation.collect", f"--base_url={stub.base_url}", "--model=stub",
            f"--prompts={prompts}", f"--out={out}", "--api_key_env=", "--noprogress", "--batch_api",
            "--batch_poll_seconds=0.05", *extra]


def _run(stub, prompts, out, *extra):
    return subprocess.run(_cmd(stub, prompts, out, *extra), capture_output=True, text=True, timeout=120)


def _replies(out):
    with open(out) as f:
        return {r["id"]: r["turns"][-1]["text"] for r in map(json.loads, f)}


def _creates(stub):
    return sum(1 for method, path in stub.http_log if (method, path) == ("POST", "/v1/batches"))


def _line_faults(body, attempt):
    prompt = body["messages"][-1]["content"]
    if attempt == 1 and prompt == PROMPTS[3]:
        return Fault("line_failed")
    if attempt == 1 and prompt == PROMPTS[5]:
        return Fault("line_expired")
    return None


def test_failed_and_expired_lines_go_into_a_smaller_second_batch(tmp_path):
    prompts, out = _prompts(tmp_path), tmp_path / "out.jsonl"
    with OpenAIStub(batch_faults=FaultPlan(decide=_line_faults)) as stub:
        done = _run(stub, prompts, out)
        assert done.returncode == 0, done.stderr
        assert _replies(out) == {f"p{i}": f"echo: {p}" for i, p in enumerate(PROMPTS)}
        assert stub.billed_prompts() == {p: 1 for p in PROMPTS}
        assert stub.billing["live"]["requests"] == 0 and stub.billing["batch"]["requests"] == 12
        assert _creates(stub) == 2
        second = sorted(stub.batches.jobs.values(), key=lambda j: j.created_at)[-1]
        assert second.counts["total"] == 2  # only the failed and the expired line
    report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    assert report["client"]["batch_jobs"] == 2 and report["client"]["batch_lines_failed"] == 2
    assert "spent $" in done.stderr


def test_fallback_live_sends_the_failed_lines_as_live_requests(tmp_path):
    prompts, out = _prompts(tmp_path), tmp_path / "out.jsonl"
    with OpenAIStub(batch_faults=FaultPlan(decide=_line_faults)) as stub:
        done = _run(stub, prompts, out, "--batch_fallback=live")
        assert done.returncode == 0, done.stderr
        assert len(_replies(out)) == 12
        assert _creates(stub) == 1
        assert stub.billed_prompts() == {p: 1 for p in PROMPTS}
        assert sorted(r.prompt for r in stub.request_log) == sorted([PROMPTS[3], PROMPTS[5]])


def test_lines_failing_every_round_exit_1_and_a_rerun_finishes_them(tmp_path):
    prompts, out = _prompts(tmp_path), tmp_path / "out.jsonl"
    always = FaultPlan(decide=lambda body, attempt: Fault("line_failed")
                       if body["messages"][-1]["content"] == PROMPTS[0] and attempt <= 2 else None)
    with OpenAIStub(batch_faults=always) as stub:
        first = _run(stub, prompts, out, "--batch_max_rounds=2")
        assert first.returncode == 1 and "failed after all retries" in first.stderr
        assert len(_replies(out)) == 11
        again = _run(stub, prompts, out, "--batch_max_rounds=2")
        assert again.returncode == 0, again.stderr
        assert len(_replies(out)) == 12 and stub.billed_prompts() == {p: 1 for p in PROMPTS}
        assert _creates(stub) == 3


@pytest.mark.parametrize("point", ["files.created", "batches.create", "batches.created", "polling"])
def test_kill_9_at_each_step_then_rerun_bills_each_request_once(tmp_path, point):
    prompts, out = _prompts(tmp_path), tmp_path / "out.jsonl"
    with OpenAIStub(batch_seconds=1.5 if point == "polling" else 0.0) as stub:
        if point == "polling":
            proc = subprocess.Popen(_cmd(stub, prompts, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while sum(1 for m, p in stub.http_log if m == "GET" and p.startswith("/v1/batches/")) < 3:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.02)
        else:
            reached = stub.hold(point)
            proc = subprocess.Popen(_cmd(stub, prompts, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert reached.wait(60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        stub.release(point)
        time.sleep(0.1)
        assert not out.exists()
        again = _run(stub, prompts, out)
        assert again.returncode == 0, again.stderr
        assert _replies(out) == {f"p{i}": f"echo: {p}" for i, p in enumerate(PROMPTS)}
        assert stub.billed_prompts() == {p: 1 for p in PROMPTS}
        assert _creates(stub) == 1 and len(stub.batches.jobs) == 1  # re-attached, never created twice
        assert stub.billing["live"]["requests"] == 0
        report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
        assert report["client"]["batch_jobs_resumed"] == 1
        third = _run(stub, prompts, out)  # everything is in the journal now: nothing is sent
        assert third.returncode == 0 and len(stub.batches.jobs) == 1


def test_nq_synthetic_with_batch_api_fills_the_set_from_batch_jobs(tmp_path):
    out = tmp_path / "nq.jsonl"
    with OpenAIStub(responder=qa_responder()) as stub:
        cmd = [sys.executable, "-m", "easylm_imitate.imitation.nq_synthetic", f"--base_url={stub.base_url}",
               "--model=stub", f"--out={out}", "--api_key_env=", "--noprogress", "--num_examples=40",
               "--batch_api", "--batch_poll_seconds=0.05"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert len(out.read_text().splitlines()) == 40
        assert stub.billing["live"]["requests"] == 0 and stub.billing["batch"]["requests"] >= 4
        billed = stub.billing["batch"]["requests"]
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and stub.billing["batch"]["requests"] == billed


def test_a_create_whose_reply_is_an_error_is_found_by_its_tag_not_created_again(tmp_path):
    prompts, out = _prompts(tmp_path), tmp_path / "out.jsonl"
    with OpenAIStub() as stub:
        stub.fail_at("batches.created")  # the batch exists, but the client gets HTTP 500
        done = _run(stub, prompts, out)
        assert done.returncode == 0, done.stderr
        assert _creates(stub) == 1 and len(stub.batches.jobs) == 1
        assert stub.billed_prompts() == {p: 1 for p in PROMPTS}
