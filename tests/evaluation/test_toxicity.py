import http.server
import json
import math
import threading

import pytest

from easylm_imitate.evaluation import toxicity
from support.toy_completions import toy_completions_server


class FakeBackend:
    name = "fake"

    def generate(self, prompts, *, max_new_tokens, stop, temperature=0.0, n=1, seed=0):
        return [[f"{p} nice", f"{p} awful"][:n] for p in prompts]


class PerspectiveHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.server.calls += 1
        if self.server.calls == 1:  # one rate-limit answer first: the scorer must retry
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        assert "key=secret" in self.path
        text = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["comment"]["text"]
        score = 0.9 if "awful" in text else 0.1
        body = json.dumps({"attributeScores": {"TOXICITY": {"summaryScore": {"value": score}}}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_perspective_scorer_and_metrics(tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PerspectiveHandler)
    srv.calls = 0
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        scorer = toxicity.PerspectiveScorer("secret", f"http://127.0.0.1:{srv.server_address[1]}/analyze",
                                            queries_per_second=0)
        record, rows = toxicity.evaluate(FakeBackend(), ["p1", "p2"], scorer, k=2)
    finally:
        srv.shutdown()
        srv.server_close()
    assert rows[0]["toxicity"] == [0.1, 0.9]
    assert record["metrics"]["mean_non_toxicity"] == pytest.approx(0.5)
    assert record["metrics"]["expected_max_toxicity"] == pytest.approx(0.9)
    assert record["metrics"]["toxicity_probability"] == 1.0
    assert srv.calls == 6  # the scorer's test text first (after the 429), then the four continuations


def test_load_prompts_rtp_format(tmp_path):
    path = tmp_path / "rtp.jsonl"
    path.write_text(json.dumps({"filename": "x", "prompt": {"text": "So I said", "toxicity": 0.1}}) + "\n"
                    + json.dumps({"prompt": "flat"}) + "\n" + json.dumps({"prompt": {"toxicity": 1}}) + "\n")
    prompts, rejects = toxicity.load_prompts(str(path))
    assert prompts == ["So I said", "flat"] and rejects[0]["line"] == 3


def test_perspective_needs_key():
    with pytest.raises(ValueError, match="needs a key"):
        toxicity.PerspectiveScorer("")


class CountingBackend(FakeBackend):
    def __init__(self):
        self.prompts = []

    def generate(self, prompts, **kwargs):
        self.prompts += prompts
        return super().generate(prompts, **kwargs)


class FixedScorer:
    name = "fixed"

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def score(self, texts):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise ConnectionError("network went away")
        return [0.9 if "awful" in t else 0.1 for t in texts]


def test_scorer_is_checked_before_anything_is_generated(tmp_path):
    backend = CountingBackend()
    with pytest.raises(toxicity.ScorerUnavailable, match="network went away"):
        toxicity.evaluate(backend, ["p1", "p2"], FixedScorer(fail_after=0), k=2)
    closed = toxicity.PerspectiveScorer("secret", "http://127.0.0.1:9/analyze", queries_per_second=0, max_retries=0)
    with pytest.raises(toxicity.ScorerUnavailable, match=r"--scorer=hf:DIR"):
        toxicity.evaluate(backend, ["p1", "p2"], closed, k=2, generations=str(tmp_path / "g.jsonl"))
    assert backend.prompts == [] and not (tmp_path / "g.jsonl").exists()


def never_built():
    raise AssertionError("a rerun with every continuation saved must not build the model")


def test_generations_are_kept_so_a_rerun_only_scores(tmp_path):
    saved = tmp_path / "tox.generations.jsonl"
    prompts = ["p1", "p2", "p3"]
    backend = CountingBackend()
    with pytest.raises(ConnectionError):  # the test text scores, then the network goes away
        toxicity.evaluate(backend, prompts, FixedScorer(fail_after=1), k=2, chunk=2, generations=str(saved))
    assert backend.prompts == prompts and len(saved.read_text().splitlines()) == 4  # header + 3 prompts
    record, rows = toxicity.evaluate(never_built, prompts, FixedScorer(), k=2, chunk=2, generations=str(saved))
    assert record["model"] == "fake" and record["n"] == 3 and rows[2]["continuations"] == ["p3 nice", "p3 awful"]
    assert record["metrics"]["mean_non_toxicity"] == pytest.approx(0.5)


def test_torn_or_foreign_generations_files(tmp_path):
    saved = tmp_path / "g.jsonl"
    backend = CountingBackend()
    toxicity.evaluate(backend, ["p1", "p2", "p3"], FixedScorer(), k=2, chunk=2, generations=str(saved))
    with open(saved, "a") as f:
        f.write('{"index": 3, "prompt": "p4", "contin')  # a crash in the middle of a line
    backend.prompts.clear()
    record, _ = toxicity.evaluate(backend, ["p1", "p2", "p3", "p4"], FixedScorer(), k=2, chunk=2,
                                  generations=str(saved))
    assert backend.prompts == ["p4"] and record["n"] == 4
    assert [json.loads(line).get("index") for line in saved.read_text().splitlines()] == [None, 0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"g.jsonl: saved with other settings \(k=2; now k=3\)"):
        toxicity.evaluate(backend, ["p1"], FixedScorer(), k=3, generations=str(saved))
    with pytest.raises(ValueError, match=r"g.jsonl:2: prompt 0 was 'p1', now 'other'"):
        toxicity.evaluate(backend, ["other"], FixedScorer(), k=2, generations=str(saved))


def tiny_classifier(path):
    """A local text-classification model (random BERT, classifier fixed to p(toxic) = sigmoid(-4))."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "so", "i", "said"]) + "\n")
    config = BertConfig(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64, id2label={0: "non-toxic", 1: "toxic"},
                        label2id={"non-toxic": 0, "toxic": 1})
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([2.0, -2.0]))
    model.save_pretrained(path)
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    return path


def continuations(body, prompts):
    """`n` fixed continuations of every prompt."""
    n = body.get("n", 1)
    return [{"index": i * n + j, "text": f" continuation {j}", "finish_reason": "length", "logprobs": None}
            for i in range(len(prompts)) for j in range(n)]


def test_binary_offline_with_a_local_classifier(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    classifier = tiny_classifier(tmp_path / "classifier")
    prompts = tmp_path / "rtp.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": {"text": f"So I said {i}"}}) + "\n" for i in range(3)))
    out = tmp_path / "tox.json"
    cmd = [sys.executable, str(Path(__file__).resolve().parents[2] / "eval" / "toxicity.py"), f"--prompts={prompts}",
           f"--scorer=hf:{classifier}", "--k=2", f"--out={out}"]
    with toy_completions_server(continuations) as srv:
        run = subprocess.run(cmd + [f"--endpoint={srv.url}", "--endpoint_model=toy", "--limit=2"],
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["n"] == 2 and result["settings"]["scorer"] == f"hf:{classifier}"
    assert result["metrics"]["mean_non_toxicity"] == pytest.approx(1 - 1 / (1 + math.exp(4)), abs=1e-4)
    assert len((tmp_path / "tox.generations.jsonl").read_text().splitlines()) == 3
    # the server is gone and no model is named: the saved continuations are scored again
    rerun = subprocess.run(cmd + ["--limit=2"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(out.read_text())["model"] == "toy"


def test_binary_without_a_working_scorer_stops_before_generating(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    prompts = tmp_path / "rtp.jsonl"
    prompts.write_text(json.dumps({"prompt": {"text": "So I said"}}) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PERSPECTIVE_API_KEY"}
    run = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[2] / "eval" / "toxicity.py"),
                          f"--prompts={prompts}", "--endpoint=http://127.0.0.1:9/v1", "--endpoint_model=m",
                          f"--out={tmp_path / 'tox.json'}"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2 and "needs a key" in run.stderr and "--scorer=hf:DIR" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rtp.jsonl"]
