import http.server
import json
import threading

import pytest

from easylm_imitate.evaluation import toxicity


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
    assert srv.calls == 5


def test_load_prompts_rtp_format(tmp_path):
    path = tmp_path / "rtp.jsonl"
    path.write_text(json.dumps({"filename": "x", "prompt": {"text": "So I said", "toxicity": 0.1}}) + "\n"
                    + json.dumps({"prompt": "flat"}) + "\n" + json.dumps({"prompt": {"toxicity": 1}}) + "\n")
    prompts, rejects = toxicity.load_prompts(str(path))
    assert prompts == ["So I said", "flat"] and rejects[0]["line"] == 3


def test_perspective_needs_key():
    with pytest.raises(ValueError, match="needs a key"):
        toxicity.PerspectiveScorer("")
