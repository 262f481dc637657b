"""--dry_run estimates and sends nothing; --max_cost is never exceeded (counted with the stub's
billing) under faults and retries, live and batch; a rerun with a higher cap continues."""

import json
import subprocess
import sys

from easylm_imitate.testing import Fault, FaultPlan, OpenAIStub

# $1 per token either way, so the stub's billed tokens are dollars.
PRICES = ("--price_per_1k_prompt=1000", "--price_per_1k_completion=1000")


def _prompts(tmp_path, n, text="word{i} a b"):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": text.format(i=i)}) + "\n" for i in range(n)))
    return path


def _collect(stub_url, prompts, out, *extra):
    cmd = [sys.executable, "-m", "easylm_imitate.imitation.collect", f"--base_url={stub_url}", "--model=stub",
           f"--prompts={prompts}", f"--out={out}", "--api_key_env=", "--noprogress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _billed(stub, discount=0.5):
    b = stub.billing
    return (b["live"]["prompt_tokens"] + b["live"]["completion_tokens"]
            + discount * (b["batch"]["prompt_tokens"] + b["batch"]["completion_tokens"]))


def _ten_words(body):
    return " ".join(["r"] * 10)


def test_dry_run_prints_the_estimate_and_sends_nothing(tmp_path):
    prompts, out = _prompts(tmp_path, 3, "abcd efg{i}"), tmp_path / "out.jsonl"
    with OpenAIStub() as stub:
        live = _collect(stub.base_url, prompts, out, "--dry_run", "--max_tokens=10", "--price_per_1k_prompt=2",
                        "--price_per_1k_completion=4")
        batch = _collect(stub.base_url, prompts, out, "--dry_run", "--max_tokens=10", "--price_per_1k_prompt=2",
                         "--price_per_1k_completion=4", "--batch_api", "--batch_discount=0.5")
        nq = subprocess.run([sys.executable, "-m", "easylm_imitate.imitation.nq_synthetic", "--dry_run",
                             f"--base_url={stub.base_url}", "--model=stub", f"--out={tmp_path / 'nq.jsonl'}",
                             "--num_examples=50", "--api_key_env="], capture_output=True, text=True, timeout=120)
        assert stub.http_log == []
    assert live.returncode == 0 and batch.returncode == 0 and nq.returncode == 0, live.stderr + batch.stderr + nq.stderr
    est = json.loads(live.stdout.strip().splitlines()[-1])
    # 3 requests of 9 characters (3 tokens at ~4 characters a token) and max_tokens=10
    assert (est["requests"], est["prompt_tokens"], est["completion_tokens"]) == (3, 9, 30)
    assert abs(est["cost"] - (9 * 2 + 30 * 4) / 1000) < 1e-9 and "nothing sent" in live.stderr
    assert abs(json.loads(batch.stdout.strip().splitlines()[-1])["cost"] - est["cost"] / 2) < 1e-9
    assert json.loads(nq.stdout.strip().splitlines()[-1])["requests"] == 5  # 50 examples / 10 pairs a call
    assert not out.exists()


def test_a_cap_below_one_request_sends_nothing_and_exits_3(tmp_path):
    prompts, out = _prompts(tmp_path, 4), tmp_path / "out.jsonl"
    with OpenAIStub(responder=_ten_words) as stub:
        done = _collect(stub.base_url, prompts, out, *PRICES, "--max_tokens=4", "--max_cost=19")
        assert done.returncode == 3, done.stderr
        assert "--max_cost" in done.stderr and "rerun with a higher --max_cost" in done.stderr
        assert stub.request_log == []
        no_bound = _collect(stub.base_url, prompts, out, *PRICES, "--max_cost=19")
        assert no_bound.returncode != 0 and "--max_tokens" in no_bound.stderr


def test_the_cap_holds_under_faults_and_retries_and_a_higher_cap_continues(tmp_path):
    prompts, out = _prompts(tmp_path, 20), tmp_path / "out.jsonl"
    plan = FaultPlan(random={"rate_limit": 0.1, "server_error": 0.1, "drop": 0.1, "malformed": 0.1, "slow": 0.05},
                     retry_after=0.05, slow_delay=3.0, seed=3)
    with OpenAIStub(responder=_ten_words, faults=plan) as stub:
        first = _collect(stub.base_url, prompts, out, *PRICES, "--max_tokens=4", "--max_cost=100",
                         "--max_in_flight=4", "--timeout=1")
        assert first.returncode == 3, first.stderr
        assert "stopped by --max_cost=100" in first.stderr
        assert 0 < _billed(stub) <= 100
        answered_first = {r.prompt for r in stub.request_log if r.outcome in ("ok", "slow") and r.status == 200}
        stub.reset()
        second = _collect(stub.base_url, prompts, out, *PRICES, "--max_tokens=4", "--max_cost=1000",
                          "--max_in_flight=4", "--timeout=1")
        assert second.returncode == 0, second.stderr
        assert _billed(stub) <= 1000
        assert not answered_first & {r.prompt for r in stub.request_log}  # nothing answered is asked again
    with open(out) as f:
        assert len(f.readlines()) == 20
    assert "spent $" in second.stderr and "over the whole journal" in second.stderr


def test_the_cap_holds_for_batch_jobs_and_a_rerun_continues(tmp_path):
    prompts, out = _prompts(tmp_path, 12), tmp_path / "out.jsonl"
    batch = ("--batch_api", "--batch_poll_seconds=0.05", "--batch_discount=0.5")
    fail_first = FaultPlan(decide=lambda body, attempt: Fault("line_failed" if attempt == 1 else "line_expired")
                           if body["messages"][-1]["content"] == "word0 a b" and attempt <= 2 else None)
    with OpenAIStub(responder=_ten_words, batch_faults=fail_first) as stub:
        # worst case of a line: (9 bytes + 4 + 3) + 4 completion tokens = $20 live, $10 batch: 6 lines fit in $65
        first = _collect(stub.base_url, prompts, out, *PRICES, *batch, "--max_tokens=4", "--max_cost=65")
        assert first.returncode == 3, first.stderr
        sizes = sorted((int(j.id.rsplit("-", 1)[1]), j.counts["total"]) for j in stub.batches.jobs.values())
        assert sizes[0][1] == 6 and len(sizes) == 3  # later rounds take what the settled cost left room for
        assert 6 < stub.billing["batch"]["requests"] < 12 and _billed(stub) <= 65
        second = _collect(stub.base_url, prompts, out, *PRICES, *batch, "--max_tokens=4", "--max_cost=1000")
        assert second.returncode == 0, second.stderr
        assert stub.billed_prompts() == {f"word{i} a b": 1 for i in range(12)}
        assert stub.billing["live"]["requests"] == 0
    report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    # the API's usage at the batch price: 12 x (3 + 4) tokens x $1 x 0.5, spread over the two runs
    assert abs(report["client"]["journal_spent"] - 12 * 7 * 0.5) < 1e-6


def test_nq_synthetic_stops_at_the_cap_and_a_rerun_with_a_higher_one_finishes(tmp_path):
    from easylm_imitate.testing.responders import qa_responder

    out = tmp_path / "nq.jsonl"
    cmd = [sys.executable, "-m", "easylm_imitate.imitation.nq_synthetic", "--model=stub", f"--out={out}",
           "--api_key_env=", "--noprogress", "--num_examples=60", "--max_tokens=200", "--max_in_flight=2",
           "--price_per_1k_prompt=1", "--price_per_1k_completion=1"]
    with OpenAIStub(responder=qa_responder()) as stub:
        first = subprocess.run([*cmd, f"--base_url={stub.base_url}", "--max_cost=1.5"], capture_output=True,
                               text=True, timeout=120)
        assert first.returncode == 3 and "stopped by --max_cost=1.5" in first.stderr, first.stderr
        assert 0 < _billed(stub) / 1000 <= 1.5 and not out.exists()
        second = subprocess.run([*cmd, f"--base_url={stub.base_url}", "--max_cost=100"], capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert len(out.read_text().splitlines()) == 60
        assert max(stub.prompt_counts().values()) == 1  # no call answered twice
