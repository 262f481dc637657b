"""`python -m easylm_imitate.imitation.nq_synthetic` against the loopback stub."""

import json
import subprocess
import sys

from easylm_imitate.data.schema import validate_record
from easylm_imitate.imitation.qa_pairs import load_seeds, normalize_question
from easylm_imitate.testing import FaultPlan, OpenAIStub
from easylm_imitate.testing.responders import qa_responder


def nq_synthetic(stub, out, *extra):
    cmd = [sys.executable, "-m", "easylm_imitate.imitation.nq_synthetic", f"--base_url={stub.base_url}",
           "--model=stub", f"--out={out}", "--api_key_env=", "--noprogress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_builds_unique_wellformed_examples_from_five_distinct_seeds(tmp_path):
    out = tmp_path / "nq.jsonl"
    seeds = load_seeds()
    plan = FaultPlan(random={"rate_limit": 0.1, "server_error": 0.1}, retry_after=0.05, seed=1)
    with OpenAIStub(responder=qa_responder(entities=400, junk=True), faults=plan) as stub:
        done = nq_synthetic(stub, out, "--num_examples=150", "--seed=3", "--max_in_flight=4")
        assert done.returncode == 0, done.stderr
        sent = [r for r in stub.request_log if r.outcome == "ok"]
        records = read_jsonl(out)
        report = json.loads((tmp_path / "nq.jsonl.report.json").read_text())

        assert len(records) == 150
        questions = [normalize_question(r["turns"][0]["text"]) for r in records]
        assert len(set(questions)) == 150
        for r in records:
            validate_record(r)
            assert r["source"] == "nq_synthetic" and [t["role"] for t in r["turns"]] == ["user", "assistant"]
            assert r["turns"][0]["text"] == r["turns"][0]["text"].lower() and r["turns"][1]["text"].strip()
        seed_questions = {normalize_question(s.question) for s in seeds}
        assert not seed_questions & set(questions)
        assert report["malformed"]["multi_line"] > 0 and report["dropped"]["copies_seed"] > 0
        assert report["dropped"]["duplicate"] > 0  # 400 entities: repeats happen and are dropped

        for request in sent:
            assert request.body["temperature"] == 1.0
            prompt = request.body["messages"][-1]["content"]
            shown = [s for s in seeds if f"Q: {s.question}\nA: {s.answer}\n" in prompt]
            assert len(shown) == 5
        assert len({r.body["seed"] for r in sent}) == len(sent)  # every call is a distinct request
        assert {"rate_limit", "server_error"} <= {r.outcome for r in stub.request_log}  # and it got through them

        # The same command again: everything comes from the journal and the output is identical.
        before = len(stub.request_log)
        again = nq_synthetic(stub, out, "--num_examples=150", "--seed=3", "--max_in_flight=4")
        assert again.returncode == 0, again.stderr
        assert len(stub.request_log) == before and read_jsonl(out) == records


def test_contaminated_questions_are_dropped(tmp_path):
    with OpenAIStub(responder=qa_responder(entities=100000)) as stub:
        first = tmp_path / "nq.jsonl"
        assert nq_synthetic(stub, first, "--num_examples=40").returncode == 0
        leaked = [r["turns"][0]["text"] for r in read_jsonl(first)[:10]]
        eval_file = tmp_path / "eval.jsonl"
        eval_file.write_text("".join(json.dumps({"question": q.upper().rstrip("?") + " ?", "answer": ["x"]}) + "\n"
                                     for q in leaked))
        clean = tmp_path / "clean.jsonl"
        done = nq_synthetic(stub, clean, "--num_examples=40", f"--journal={first}.journal",
                            f"--exclude_questions={eval_file}")
        assert done.returncode == 0, done.stderr
    questions = {normalize_question(r["turns"][0]["text"]) for r in read_jsonl(clean)}
    assert len(questions) == 40 and not questions & {normalize_question(q) for q in leaked}
    assert json.loads((tmp_path / "clean.jsonl.report.json").read_text())["dropped"]["contaminated"] == 10


def test_gives_up_with_a_clear_message_when_the_target_writes_no_pairs(tmp_path):
    with OpenAIStub(responder=lambda body: "I cannot help with that.") as stub:
        done = nq_synthetic(stub, tmp_path / "nq.jsonl", "--num_examples=5", "--max_calls=3")
    assert done.returncode == 1 and "5 examples short after 3 calls" in done.stderr
    assert read_jsonl(tmp_path / "nq.jsonl") == []
