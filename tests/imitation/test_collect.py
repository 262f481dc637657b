"""`python -m easylm_imitate.imitation.collect`: prompts files, samples, rejects, kill -9 and resume."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from easylm_imitate.data.schema import validate_record
from easylm_imitate.testing import Fault, FaultPlan, OpenAIStub


def reply_for(body):
    turns = "|".join(m["content"] for m in body["messages"])
    return [f"reply {j} to {turns}" for j in range(body.get("n", 1))] if body.get("n", 1) > 1 else f"reply to {turns}"


def collect_cmd(stub, prompts, out, *extra):
    return [sys.executable, "-m", "easylm_imitate.imitation.collect", f"--base_url={stub.base_url}", "--model=stub",
            f"--prompts={prompts}", f"--out={out}", "--api_key_env=", "--noprogress", *extra]


def collect(stub, prompts, out, *extra):
    return subprocess.run(collect_cmd(stub, prompts, out, *extra), capture_output=True, text=True, timeout=120)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def test_bad_lines_are_rejected_per_line_and_the_rest_goes_through(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_lines(prompts, [
        {"prompt": "what is a river?"},                                                      # 1 ok
        "{this is not json",                                                                # 2
        {"id": "e", "prompt": "   "},                                                        # 3 empty
        {"id": "m", "source": "sharegpt", "turns": [{"role": "user", "text": "hi"},
                                                    {"role": "assistant", "text": "hello"},
                                                    {"role": "user", "text": "tell me a joke"}]},  # 4 ok, multi-turn
        {"id": "x", "source": "s", "turns": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "yo"}]},  # 5
        ["a", "list"],                                                                      # 6
        {"id": "s", "prompt": "be brief", "system": "You are terse."},                      # 7 ok
        {"id": "s", "prompt": "same id again"},                                             # 8 duplicate
        {"prompt": 42},                                                                     # 9
        {"text": "no prompt field"},                                                        # 10
        {"id": "r", "source": "s", "turns": [{"role": "wizard", "text": "hi"}]},            # 11
    ])
    out = tmp_path / "out.jsonl"
    with OpenAIStub(responder=reply_for) as stub:
        done = collect(stub, prompts, out)
        assert done.returncode == 0, done.stderr
        assert len(stub.request_log) == 3
    rejects = {r["line"]: r["reason"] for r in read_jsonl(str(out) + ".rejects.jsonl")}
    assert sorted(rejects) == [2, 3, 5, 6, 8, 9, 10, 11]
    assert "invalid JSON" in rejects[2] and "empty prompt" in rejects[3]
    assert "end in a user turn" in rejects[5] and "JSON object" in rejects[6]
    assert "duplicate id 's' (first on line 7)" in rejects[8] and "'prompt' must be a string" in rejects[9]
    assert "'prompt'" in rejects[10] and "turns[0].role" in rejects[11]
    assert all(r["file"] == str(prompts) for r in read_jsonl(str(out) + ".rejects.jsonl"))

    records = read_jsonl(out)
    for r in records:
        validate_record(r)
    assert [r["id"] for r in records][1:] == ["m", "s"]
    assert records[0]["turns"] == [{"role": "user", "text": "what is a river?"},
                                   {"role": "assistant", "text": "reply to what is a river?"}]
    assert [t["role"] for t in records[1]["turns"]] == ["user", "assistant", "user", "assistant"]
    assert records[1]["turns"][-1]["text"] == "reply to hi|hello|tell me a joke"
    assert records[1]["meta"]["prompt_source"] == "sharegpt" and records[1]["source"] == "target:stub"
    assert records[2]["turns"][0] == {"role": "system", "text": "You are terse."}
    report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    assert report["rejected_lines"] == 8 and report["records"] == 3


def test_several_samples_per_prompt_with_n_or_with_seeds(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_lines(prompts, [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}])
    with OpenAIStub(responder=reply_for) as stub:
        assert collect(stub, prompts, tmp_path / "n.jsonl", "--samples_per_prompt=3", "--temperature=0.7").returncode == 0
        assert [r.body["n"] for r in stub.request_log] == [3, 3]
        stub.reset()
        assert collect(stub, prompts, tmp_path / "seed.jsonl", "--samples_per_prompt=2", "--sample_with=seed",
                       "--max_tokens=64").returncode == 0
        assert sorted((r.prompt, r.body["seed"], r.body["max_tokens"]) for r in stub.request_log) == [
            ("one", 0, 64), ("one", 1, 64), ("two", 0, 64), ("two", 1, 64)]
    by_n = read_jsonl(tmp_path / "n.jsonl")
    assert [r["id"] for r in by_n] == ["a#0", "a#1", "a#2", "b#0", "b#1", "b#2"]
    assert [r["turns"][-1]["text"] for r in by_n[:3]] == ["reply 0 to one", "reply 1 to one", "reply 2 to one"]
    assert [r["meta"]["sample"] for r in by_n] == [0, 1, 2, 0, 1, 2]
    assert [r["id"] for r in read_jsonl(tmp_path / "seed.jsonl")] == ["a#0", "a#1", "b#0", "b#1"]


def test_failed_prompts_exit_nonzero_and_a_rerun_finishes_them(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_lines(prompts, [{"id": str(i), "prompt": f"p{i}"} for i in range(5)])
    out = tmp_path / "out.jsonl"

    def decide(body, attempt):
        return Fault("server_error") if body["messages"][-1]["content"] == "p2" else None

    with OpenAIStub(responder=reply_for, faults=FaultPlan(decide=decide)) as stub:
        done = collect(stub, prompts, out, "--max_retries=1")
        assert done.returncode == 1 and "1 prompt sample(s) failed" in done.stderr
        assert [r["id"] for r in read_jsonl(out)] == ["0", "1", "3", "4"]
        report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
        assert [(f["id"], f["line"]) for f in report["failures"]] == [("2", 3)]
        stub.faults = FaultPlan()
        stub.reset()
        assert collect(stub, prompts, out).returncode == 0
        assert [r.prompt for r in stub.request_log] == ["p2"]
    assert [r["id"] for r in read_jsonl(out)] == ["0", "1", "2", "3", "4"]


def _journaled_prompts(journal):
    db = sqlite3.connect(journal, timeout=10)
    try:
        rows = db.execute("SELECT request FROM responses").fetchall()
    except sqlite3.OperationalError:  # not created yet
        rows = []
    finally:
        db.close()
    return {json.loads(r)["messages"][-1]["content"] for (r,) in rows}


def test_kill_9_mid_run_then_rerun_loses_nothing_and_resends_nothing(tmp_path):
    n, in_flight = 120, 4
    prompts = tmp_path / "prompts.jsonl"
    write_lines(prompts, [{"id": f"id{i}", "prompt": f"prompt {i}"} for i in range(n)])
    out = tmp_path / "out.jsonl"
    journal = str(out) + ".journal"
    with OpenAIStub(responder=reply_for, delay=0.05) as stub:  # ~1.5 s of work at 4 in flight
        proc = subprocess.Popen(collect_cmd(stub, prompts, out, f"--max_in_flight={in_flight}"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(_journaled_prompts(journal)) < 30:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        assert not out.exists()  # nothing half-written
        done_before = _journaled_prompts(journal)
        answered_before = stub.prompt_counts()
        assert 30 <= len(done_before) < n
        assert len(stub.request_log) < n

        stub.reset()
        again = subprocess.run(collect_cmd(stub, prompts, out, f"--max_in_flight={in_flight}"),
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        resent = stub.prompt_counts(outcome=None)

    assert not set(resent) & done_before  # nothing that had succeeded was sent again
    assert set(resent) | done_before == {f"prompt {i}" for i in range(n)}
    # Only requests answered by the server but not yet journaled when the process died went twice.
    twice = set(resent) & set(answered_before)
    assert len(twice) <= in_flight
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [f"id{i}" for i in range(n)]  # none lost, none duplicated
    assert all(r["turns"][-1]["text"] == f"reply to prompt {i}" for i, r in enumerate(records))


def test_ctrl_c_exits_cleanly_and_the_rerun_resumes(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    # 300 prompts at 2 in flight take >= 7.5 s, so the run is surely unfinished at SIGINT
    # even on a loaded machine (it is sent once 10 prompts are journaled).
    write_lines(prompts, [{"id": f"id{i}", "prompt": f"prompt {i}"} for i in range(300)])
    out = tmp_path / "out.jsonl"
    with OpenAIStub(responder=reply_for, delay=0.05) as stub:
        # A shell starts background jobs (such as a CI run) with SIGINT ignored, and children
        # inherit that; restore the default so the child sees Ctrl-C as a terminal user's would.
        proc = subprocess.Popen(collect_cmd(stub, prompts, out, "--max_in_flight=2"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 60
        while len(_journaled_prompts(str(out) + ".journal")) < 10:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130 and "rerun the same command to resume" in err
        assert "Traceback" not in err and not out.exists()
        done_before = _journaled_prompts(str(out) + ".journal")
        stub.reset()
        assert collect(stub, prompts, out).returncode == 0
        assert not set(stub.prompt_counts(outcome=None)) & done_before
    assert [r["id"] for r in read_jsonl(out)] == [f"id{i}" for i in range(300)]


def test_hostile_lines_and_a_cut_gzip_are_rejected_and_every_valid_prompt_is_collected(tmp_path):
    from easylm_imitate.testing.hostile_lines import lone_surrogate_line, nested_json_line, write_truncated_gz

    lines = [json.dumps({"id": f"p{i}", "prompt": f"prompt {i}"}) for i in range(10)]
    lines.insert(3, nested_json_line(field="prompt", id="deep"))
    lines.insert(6, lone_surrogate_line({"id": "s", "prompt": "x\ud800y"}))
    plain = tmp_path / "prompts.jsonl"
    write_lines(plain, lines)
    cut = tmp_path / "prompts.jsonl.gz"
    whole = write_truncated_gz(cut, [json.dumps({"id": f"g{i}", "prompt": f"gz prompt {i} " + "word " * (i % 7)})
                                     for i in range(120)])
    with OpenAIStub(responder=reply_for) as stub:
        done = collect(stub, plain, tmp_path / "a.jsonl")
        assert done.returncode == 0, done.stderr
        done = collect(stub, cut, tmp_path / "b.jsonl")
        assert done.returncode == 0, done.stderr
        assert len(stub.request_log) == 10 + whole
    assert [r["id"] for r in read_jsonl(tmp_path / "a.jsonl")] == [f"p{i}" for i in range(10)]
    rejects = read_jsonl(tmp_path / "a.jsonl.rejects.jsonl")
    assert [(r["file"], r["line"]) for r in rejects] == [(str(plain), 4), (str(plain), 7)]
    assert "nested" in rejects[0]["reason"] and "surrogate" in rejects[1]["reason"]
    assert [r["id"] for r in read_jsonl(tmp_path / "b.jsonl")] == [f"g{i}" for i in range(whole)]
    rejects = read_jsonl(tmp_path / "b.jsonl.rejects.jsonl")
    assert [(r["file"], r["line"]) for r in rejects] == [(str(cut), whole + 1)]
    assert "truncated" in rejects[0]["reason"]


def test_a_reply_holding_a_lone_surrogate_fails_only_its_prompt(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_lines(prompts, [{"id": str(i), "prompt": f"p{i}"} for i in range(4)])
    out = tmp_path / "out.jsonl"

    def responder(body):
        return "bad \ud800 reply" if body["messages"][-1]["content"] == "p1" else reply_for(body)

    with OpenAIStub(responder=responder) as stub:
        done = collect(stub, prompts, out, "--max_retries=1")
    assert done.returncode == 1 and "1 prompt sample(s) failed" in done.stderr and "Traceback" not in done.stderr
    assert [r["id"] for r in read_jsonl(out)] == ["0", "2", "3"]
    failures = json.loads((tmp_path / "out.jsonl.report.json").read_text())["failures"]
    assert [f["id"] for f in failures] == ["1"] and "lone surrogate" in failures[0]["error"]


def test_a_file_with_no_usable_prompt_is_an_error_naming_it(tmp_path):
    # the records of a data build's eval_prompts.jsonl end in the reference reply: not prompts
    prompts = tmp_path / "eval_prompts.jsonl"
    write_lines(prompts, [{"id": f"e{i}", "source": "s", "turns": [{"role": "user", "text": "q"},
                                                                  {"role": "assistant", "text": "a"}]}
                          for i in range(3)])
    with OpenAIStub(responder=reply_for) as stub:
        done = collect(stub, prompts, tmp_path / "out.jsonl")
        assert not stub.request_log
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {prompts}: no usable prompt (3 line(s) rejected:") and "rejects.jsonl" in last
