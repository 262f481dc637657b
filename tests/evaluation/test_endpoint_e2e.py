"""MMLU and NQ end to end through EndpointBackend against a loopback completions server.

The server is a deterministic toy model: tokens are whitespace-led words; it knows the
answers in ANSWERS (MMLU: the right letter gets the highest log-prob, except where it is
told to be wrong; NQ: it answers, then runs on to a new line as real models do).
"""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from easylm_imitate.evaluation import mmlu, report
from easylm_imitate.evaluation.backends import EndpointBackend, continuation_logprob
from easylm_imitate.evaluation.results import read_results
from support.toy_completions import toy_completions_server

REPO = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r"\s*\S+|\s+$")
MMLU_BELIEF = {"What is 2+2?": "B", "Capital of France?": "C", "Largest planet?": "A",  # right
               "Who wrote Hamlet?": "D"}  # wrong: gold is A
NQ_ANSWERS = {"who wrote hamlet": "William Shakespeare.", "capital of france": "Paris, France",
              "largest planet": "the planet Jupiter", "tallest mountain": "Mount Everest"}


def tokenize(text):
    toks, offsets = [], []
    for m in TOKEN.finditer(text):
        if m.group():
            toks.append(m.group())
            offsets.append(m.start())
    return toks, offsets


def token_logprob(prefix, tok):
    if tok.strip() in "ABCD" and prefix.endswith("Answer:"):
        question = prefix.rsplit("\n\n", 1)[-1].split("\n", 1)[0]
        believed = MMLU_BELIEF.get(question)
        return -0.1 if believed == tok.strip() else -3.0
    return -1.0 - 0.01 * len(tok)


def top_token(prefix):
    if prefix.endswith("Answer:"):
        question = prefix.rsplit("\n\n", 1)[-1].split("\n", 1)[0]
        return " " + MMLU_BELIEF.get(question, "A")
    return " the"


def answer(body, prompts):
    """The toy model's completion choices: echoed log-probs for scoring, NQ answers otherwise."""
    choices = []
    for i, prompt in enumerate(prompts):
        if body.get("echo") and body.get("max_tokens") == 0:
            toks, offs = tokenize(prompt)
            lps, tops = [None], [None]
            for j in range(1, len(toks)):
                prefix = prompt[:offs[j]]
                lp = token_logprob(prefix, toks[j])
                lps.append(lp)
                best = top_token(prefix)
                tops.append({best: max(lp, token_logprob(prefix, best)), toks[j]: lp})
            choices.append({"index": i, "text": prompt, "finish_reason": "length",
                            "logprobs": {"tokens": toks, "token_logprobs": lps, "top_logprobs": tops,
                                         "text_offset": offs}})
        else:
            q = prompt.rsplit("Q: ", 1)[-1].split("?", 1)[0]
            text = " " + NQ_ANSWERS.get(q, "no idea") + "\nQ: another question?"
            for n in range(body.get("n", 1)):
                choices.append({"index": i * body.get("n", 1) + n, "text": text, "finish_reason": "stop",
                                "logprobs": None})
    return choices


@pytest.fixture
def server():
    with toy_completions_server(answer) as srv:
        yield srv


def url(srv):
    return srv.url


def write_mmlu(root):
    (root / "dev").mkdir(parents=True)
    (root / "test").mkdir()
    with open(root / "dev" / "misc_knowledge_dev.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Color of the sky?", "green", "blue", "red", "black", "B"])
        w.writerow(["Number of legs of a cat?", "4", "3", "2", "8", "A"])
    with open(root / "test" / "misc_knowledge_test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["What is 2+2?", "3", "4", "5", "22", "B"])
        w.writerow(["Capital of France?", "Rome", "Berlin", "Paris", "Madrid", "C"])
        w.writerow(["Largest planet?", "Jupiter", "Mars", "Venus", "Earth", "A"])
        w.writerow(["Who wrote Hamlet?", "Shakespeare", "Dickens", "Austen", "Tolstoy", "A"])
        w.writerow(["broken row", "only", "three"])
        w.writerow(["Bad answer?", "a", "b", "c", "d", "E"])
    with open(root / "test" / "astronomy_test.csv", "w", newline="") as f:
        csv.writer(f).writerow(["Largest planet?", "Jupiter", "Mars", "Venus", "Earth", "A"])


GOLDEN = ("The following are multiple choice questions (with answers) about misc knowledge.\n\n"
          "Color of the sky?\nA. green\nB. blue\nC. red\nD. black\nAnswer: B\n\n"
          "Number of legs of a cat?\nA. 4\nB. 3\nC. 2\nD. 8\nAnswer: A\n\n"
          "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:")


def test_mmlu_golden_prompt(tmp_path):
    write_mmlu(tmp_path)
    data = mmlu.load_csv_dir(str(tmp_path))
    shots = [q for q in data.dev if q.subject == "misc_knowledge"]
    assert mmlu.build_prompt("misc_knowledge", shots, data.test[1]) == GOLDEN
    assert [(r["line"], r["reason"]) for r in data.rejects] == [
        (5, "expected 6 columns (question, A, B, C, D, answer), got 3"), (6, "answer must be one of A-D, got 'E'")]


def test_continuation_logprob_uses_offsets():
    lp = {"tokens": ["Answer", ":", " B"], "token_logprobs": [None, -1.0, -0.5],
          "top_logprobs": [None, {":": -1.0}, {" A": -0.2, " B": -0.5}], "text_offset": [0, 6, 7]}
    assert continuation_logprob(lp, len("Answer:")) == (-0.5, False)
    # a token straddling the boundary belongs to the continuation
    lp2 = {"tokens": ["Ans", "wer:B"], "token_logprobs": [None, -2.0], "top_logprobs": [None, {"wer:B": -2.0}],
           "text_offset": [0, 3]}
    assert continuation_logprob(lp2, len("Answer:")) == (-2.0, True)


def test_mmlu_end_to_end_then_report(server, tmp_path):
    write_mmlu(tmp_path / "mmlu")
    out = tmp_path / "results" / "mmlu.json"
    cmd = [sys.executable, str(REPO / "eval" / "mmlu.py"), f"--endpoint={url(server)}", "--endpoint_model=toy",
           f"--data={tmp_path / 'mmlu'}", "--k=2", f"--out={out}", "--base_model=toy-base",
           "--imitation_tokens=0", "--base_params=1e6"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    res = read_results(out)
    assert res["metrics"]["accuracy"] == pytest.approx(0.8)  # 4 of 5 right
    assert res["metrics"]["accuracy/misc_knowledge"] == pytest.approx(0.75)
    assert res["metrics"]["accuracy/astronomy"] == 1.0
    assert res["metrics"]["accuracy/stem"] == 1.0 and res["metrics"]["accuracy/other"] == pytest.approx(0.75)
    assert res["n"] == 5 and res["settings"]["rejected_rows"] == 2
    assert GOLDEN in [p for r in server.requests for p in r["prompt"]] or any(
        p.startswith(GOLDEN) for r in server.requests for p in r["prompt"])
    # a second, fine-tuned model so the report has a line to draw
    res2 = dict(res, model="toy-imitation", imitation_tokens=2e7, metrics={"accuracy": 0.7}, stderr=None)
    (tmp_path / "results" / "mmlu2.json").write_text(json.dumps(res2))
    built = report.build_report([str(tmp_path / "results")], str(tmp_path / "report"))
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| toy | toy-base | 0 | 5 | 0.8 ± " in md and "| toy-imitation | toy-base | 2e+07 | 5 | 0.7 |" in md
    assert "plots/mmlu__accuracy__vs_tokens.png" in built.files
    assert (tmp_path / "report" / "plots" / "mmlu__accuracy__vs_tokens.png").read_bytes()[:4] == b"\x89PNG"


def test_nq_end_to_end(server, tmp_path):
    data = tmp_path / "nq.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"question": "who wrote hamlet", "answer": ["William Shakespeare", "Shakespeare"]},
        {"question": "capital of france", "answer": ["Paris"]},
        {"question": "largest planet", "answer": ["Jupiter"]},
        {"question": "tallest mountain", "answer": ["Mount Everest", "Everest"]},
        {"question": "unknown thing", "answer": ["something"]}]) + "\n{bad\n")
    shots = tmp_path / "shots.jsonl"
    shots.write_text(json.dumps({"question": "color of the sky", "answer": ["blue"]}) + "\n")
    out = tmp_path / "nq.json"
    base = [sys.executable, str(REPO / "eval" / "nq_open.py"), f"--endpoint={url(server)}", "--endpoint_model=toy",
            f"--data={data}", f"--out={out}"]
    run = subprocess.run(base + [f"--shots={shots}", "--k=1"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    res = read_results(out)
    # early stop (".", ",") rescues "Paris, France"; "the planet Jupiter" is wrong either way
    assert res["metrics"]["exact_match"] == pytest.approx(3 / 5)
    assert res["metrics"]["exact_match_no_early_stop"] == pytest.approx(2 / 5)
    assert res["settings"]["rejected_inputs"] == 1
    # quiet by default: the summary and the rejected line, no httpx request lines; --verbosity shows them
    assert f"-> {out}" in run.stdout and "rejected" in run.stderr and "HTTP Request" not in run.stderr
    sent = server.requests[-1]["prompt"][0]
    assert sent == "Q: color of the sky?\nA: blue\nQ: who wrote hamlet?\nA:"
    # zero-shot needs no shots file
    run0 = subprocess.run(base + ["--k=0"], capture_output=True, text=True)
    assert run0.returncode == 0, run0.stderr[-3000:]
    assert server.requests[-1]["prompt"][0] == "Q: who wrote hamlet?\nA:"
    verbose = subprocess.run(base + ["--k=0", "--verbosity=0"], capture_output=True, text=True)
    assert verbose.returncode == 0 and "HTTP Request" in verbose.stderr


def test_endpoint_backend_generate_groups_n_samples(server):
    backend = EndpointBackend(url(server), "toy", batch_size=2)
    outs = backend.generate(["Q: capital of france?\nA:", "Q: largest planet?\nA:", "Q: x?\nA:"],
                            max_new_tokens=8, stop=["\n", ","], n=2)
    assert outs == [[" Paris", " Paris"], [" the planet Jupiter"] * 2, [" no idea"] * 2]
