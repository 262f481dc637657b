"""What every eval binary shares: failed runs exit non-zero and are written (and reported) as
failed, --limit, flags listed by --help, and where the details file goes."""

import http.server
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from easylm_imitate.evaluation import cli, report
from easylm_imitate.evaluation.results import ResultsError, make_results, read_results, validate_results
from easylm_imitate.testing.openai_stub import OpenAIStub

REPO = Path(__file__).resolve().parents[2]


def run_binary(name, *args):
    return subprocess.run([sys.executable, str(REPO / "eval" / f"{name}.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def write_replies(path, replies):
    path.write_text("".join(json.dumps({"id": str(i), "prompt": f"Question {i}?", "response": r}) + "\n"
                            for i, r in enumerate(replies)))
    return path


@pytest.fixture
def reply_files(tmp_path):
    reference = write_replies(tmp_path / "reference.jsonl", [f"Reference answer {i}." for i in range(5)])
    answers = write_replies(tmp_path / "answers.jsonl", [f"Model answer {i}, detailed." for i in range(5)])
    return reference, answers


@pytest.mark.parametrize("n, failed, attempted, rate, expected", [
    (0, 0, None, 0.05, "no item was scored"),
    (0, 4, None, 0.05, "no item was scored (4 of 4 failed)"),
    (94, 6, None, 0.05, "6 of 100 items failed (6.0%), more than --max_error_rate=0.05"),
    (95, 5, None, 0.05, None),
    (10, 1, 10, 0.05, "1 of 10 items failed (10.0%), more than --max_error_rate=0.05"),
    (10, 1, 10, 0.2, None),
])
def test_failure_reason(n, failed, attempted, rate, expected):
    assert cli.failure_reason(n, failed, attempted, rate) == expected


def test_finish_marks_and_writes_failed_records(tmp_path):
    out = tmp_path / "judge.json"
    record = make_results("llm_judge", "m", {}, {"win_rate": None, "errors": 3}, 0)
    cli.finish(record, [{"id": "0"}], str(out), failed_items=3)
    back = read_results(out)
    assert back["status"] == "failed" and back["failure"] == "no item was scored (3 of 3 failed)"
    assert back["failed_items"] == 3
    ok = cli.finish(make_results("nq_open", "m", {}, {"exact_match": 0.5}, 10), None, str(tmp_path / "nq.json"))
    assert "status" not in ok and "status" not in read_results(tmp_path / "nq.json")


def test_failed_record_schema():
    base = make_results("x", "m", {}, {"a": 1.0}, 1)
    with pytest.raises(ResultsError, match="'failure'"):
        validate_results(dict(base, status="failed"))
    with pytest.raises(ResultsError, match="'status'"):
        validate_results(dict(base, status="partly"))
    assert validate_results(dict(base, metrics={}, n=0, status="failed", failure="no item was scored"))
    with pytest.raises(ResultsError, match="'metrics'"):
        validate_results(dict(base, metrics={}))  # only a failed record may have no metrics


def no_verdict(body):
    return "Both answers have merits; I cannot decide."


def test_judge_with_no_usable_verdict_fails_loudly_and_the_report_says_so(reply_files, tmp_path):
    reference, answers = reply_files
    out = tmp_path / "results" / "judge.json"
    with OpenAIStub(responder=no_verdict) as stub:
        run = run_binary("judge", f"--reference={reference}", f"--answers={answers}", f"--judge_endpoint={stub.base_url}",
                         "--judge_model=stub", "--judge_max_tokens=24", f"--out={out}")
        sent = [r.body["max_tokens"] for r in stub.request_log]
    assert run.returncode == 1, run.stderr[-2000:]
    assert "FAILED: llm_judge" in run.stderr and "no item was scored (5 of 5 failed)" in run.stderr
    result = read_results(out)
    assert (result["status"], result["n"], result["failed_items"]) == ("failed", 0, 5)
    assert sent == [24] * 10
    ok = make_results("llm_judge", "other-model", {}, {"adjusted_win_rate": 0.4}, 5)
    (tmp_path / "results" / "ok.json").write_text(json.dumps(ok))
    report.build_report([str(tmp_path / "results")], str(tmp_path / "report"))
    md = (tmp_path / "report" / "report.md").read_text()
    failed_row = next(line for line in md.splitlines() if str(answers) in line)  # named by --answers
    assert "| failed |" in failed_row and "failed: no item was scored (5 of 5 failed)" in failed_row
    ok_row = next(line for line in md.splitlines() if "other-model" in line)
    assert ok_row.endswith("| ok |") and "0.4" in ok_row
    assert "failed: no item was scored" in (tmp_path / "report" / "report.html").read_text()


def test_report_binary_names_the_files_it_wrote(tmp_path):
    (tmp_path / "results").mkdir()
    ok = make_results("llm_judge", "m", {}, {"adjusted_win_rate": 0.4}, 5)
    (tmp_path / "results" / "judge.json").write_text(json.dumps(ok))
    run = subprocess.run([sys.executable, str(REPO / "eval" / "report.py"), f"--results={tmp_path / 'results'}",
                          f"--out_dir={tmp_path / 'report'}/"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"1 results (0 failed, 0 skipped) -> {tmp_path / 'report' / 'report.md'}," in run.stdout, run.stdout


def test_judge_limit_and_max_error_rate(reply_files, tmp_path):
    reference, answers = reply_files

    def verdicts(body):  # the model wins, except on question 0 where the judge gives no verdict
        user = body["messages"][-1]["content"]
        return "no idea" if "Question 0?" in user else ("[[A]]" if user.index("Model") < user.index("Reference") else "[[B]]")

    out = tmp_path / "judge.json"
    with OpenAIStub(responder=verdicts) as stub:
        limited = run_binary("judge", f"--reference={reference}", f"--answers={answers}", "--limit=3",
                             f"--judge_endpoint={stub.base_url}", "--judge_model=stub", f"--out={out}")
        assert limited.returncode == 1  # 1 of 3 failed: above the default 5%
        assert len(stub.request_log) == 6 and read_results(out)["failure"].startswith("1 of 3 items failed")
        tolerant = run_binary("judge", f"--reference={reference}", f"--answers={answers}", "--limit=3",
                              "--max_error_rate=0.5", f"--judge_endpoint={stub.base_url}", "--judge_model=stub",
                              f"--out={out}")
    assert tolerant.returncode == 0, tolerant.stderr[-2000:]
    result = read_results(out)
    assert "status" not in result and result["n"] == 2 and result["metrics"]["win_rate"] == 1.0
    assert result["failed_items"] == 1 and result["settings"]["limit"] == 3


def test_style_limit(reply_files, tmp_path):
    reference, answers = reply_files
    run = run_binary("style", f"--reference={reference}", f"--answers={answers}", "--limit=2",
                     f"--out={tmp_path / 'style.json'}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert read_results(tmp_path / "style.json")["n"] == 2
    assert len((tmp_path / "style.details.jsonl").read_text().splitlines()) == 2


def test_style_with_no_matching_ids_is_a_failed_run(reply_files, tmp_path):
    reference, _ = reply_files
    other = write_replies(tmp_path / "other.jsonl", [])
    run = run_binary("style", f"--reference={reference}", f"--answers={other}", f"--out={tmp_path / 'style.json'}")
    assert run.returncode == 1
    result = read_results(tmp_path / "style.json")
    assert result["status"] == "failed" and "no (model, reference) pairs" in result["failure"]


class RefusingHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request 400 with an OpenAI error body, as our server does for a
    `max_tokens` above its `--max_tokens_limit`."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": {"message": "max_tokens=512 exceeds this server's limit of 64",
                                     "type": "invalid_request_error", "param": "max_tokens", "code": None}})
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_a_refused_request_is_a_failed_run_not_a_traceback(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RefusingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        data = tmp_path / "nq.jsonl"
        data.write_text(json.dumps({"question": "who wrote hamlet", "answer": ["Shakespeare"]}) + "\n")
        out = tmp_path / "nq.json"
        run = run_binary("nq_open", f"--endpoint=http://127.0.0.1:{server.server_port}/v1", "--endpoint_model=m",
                         f"--data={data}", "--k=0", f"--out={out}", "--api_key_env=")
    finally:
        server.shutdown()
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "FAILED: nq_open m: endpoint request failed (POST http://127.0.0.1:" in run.stderr
    assert "exceeds this server's limit of 64" in run.stderr
    result = read_results(out)
    assert result["status"] == "failed" and "exceeds this server's limit of 64" in result["failure"]


def test_humaneval_limit_and_nothing_scored(tmp_path):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps({"task_id": f"T/{i}", "prompt": f"def f{i}():\n", "entry_point": f"f{i}",
                                            "test": f"def check(c):\n    assert c() == {i}\n"}) + "\n"
                                for i in range(3)))
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": f"T/{i}", "completion": f"    return {i}\n"}) + "\n"
                               for i in range(3)))
    out = tmp_path / "he.json"
    run = run_binary("humaneval", f"--problems={problems}", f"--samples={samples}", "--allow_code_execution",
                     "--k=1", "--limit=2", f"--out={out}")
    assert run.returncode == 0, run.stderr[-2000:]
    result = read_results(out)
    assert result["n"] == 2 and result["metrics"]["pass@1"] == 1.0 and "rejected_inputs" not in result["settings"]
    samples.write_text("not json\n")
    run = run_binary("humaneval", f"--problems={problems}", f"--samples={samples}", "--allow_code_execution",
                     "--k=1", f"--out={out}")
    assert run.returncode == 1
    result = read_results(out)
    assert (result["status"], result["failure"], result["n"]) == ("failed", "no samples to score", 0)


@pytest.mark.parametrize("name", ["judge", "style", "humaneval", "nq_open", "toxicity", "mmlu"])
def test_help_lists_the_shared_flags(name):
    run = run_binary(name, "--help")  # absl's --help exits 1
    expected = ["--out", "--max_error_rate", "--endpoint", "--checkpoint"]
    expected += [] if name == "mmlu" else ["--limit"]
    expected += ["--judge_max_tokens", "--judge_max_in_flight"] if name in ("judge", "style") else []
    missing = [flag for flag in expected if flag + ":" not in run.stdout]
    assert not missing, run.stdout
    usage = run.stdout.split("flags:")[0]  # a `\` continuation must not join the example's lines
    assert not re.search(r"\S {4,}[-\[]", usage), usage


def test_details_file_name_matches_the_docs():
    docs = (REPO / "docs" / "evaluation.md").read_text()
    assert cli.details_path("results/mmlu.json") == "results/mmlu.details.jsonl"
    assert "`--out=results/mmlu.json` writes `results/mmlu.details.jsonl`" in docs
    assert "FILE.details.jsonl" not in docs
