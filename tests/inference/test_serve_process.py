"""The serve binary as a real process: `--warmup` compiles before the port opens (and the
log says what it compiled), and SIGTERM with requests in flight exits within seconds."""

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from flax import nnx
from models.hf_helpers import TINY_TOKENIZER
from transformers import AutoTokenizer

from easylm_imitate import checkpoint
from easylm_imitate.inference.engine import END_OF_TURN_TOKENS
from easylm_imitate.inference.server import free_port
from easylm_imitate.models import build_model, get_preset

NAME = "slowish"
MAX_TOKENS = 500  # ~6 s per batch of 16 rows on the 2-core build machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, process, log path) of `python -m easylm_imitate.serve --warmup` on a small
    random model big enough that a batch of long replies takes seconds."""
    cfg = get_preset("tiny-llama", hidden_size=256, intermediate_size=512, num_layers=4,
                     max_position_embeddings=1024)
    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER)
    params = nnx.state(build_model(cfg, seed=3)).to_pure_dict()
    vocab = tokenizer.get_vocab()
    ends = [tokenizer.eos_token_id] + [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]
    params["lm_head"] = params["lm_head"].at[:, ends].set(0.0)  # logit 0 never wins: replies run full length
    path = checkpoint.save_params(tmp_path_factory.mktemp("ckpt") / NAME, cfg, params, tokenizer=tokenizer)
    log_path = tmp_path_factory.mktemp("log") / "serve.log"
    port = free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "easylm_imitate.serve", f"--checkpoint={path}",
                                 f"--port={port}", "--max_batch=16", "--batch_wait_ms=100",
                                 f"--max_tokens_limit={MAX_TOKENS}", "--warmup", "--warmup_prompt_tokens=16",
                                 f"--warmup_max_tokens={MAX_TOKENS}"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up:\n" + log_path.read_text()
            time.sleep(0.3)
        yield url, proc, log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def completion(url: str, max_tokens: int, timeout: float = 120):
    return httpx.post(url + "/v1/completions", timeout=timeout,
                      json={"model": NAME, "prompt": "Once upon a time", "max_tokens": max_tokens,
                            "temperature": 0})


def test_warmup_compiles_before_serving_and_logs_each_shape(server):
    url, _, log_path = server
    log = log_path.read_text().splitlines()
    compiling = [i for i, line in enumerate(log) if "compiling generation" in line]
    listening = next(i for i, line in enumerate(log) if "Uvicorn running on" in line)
    assert compiling and max(compiling) < listening, "\n".join(log)
    assert any("batch 16" in log[i] and "512 new tokens" in log[i] for i in compiling), "\n".join(log)
    before = len(log)
    r = completion(url, MAX_TOKENS)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == MAX_TOKENS, r.text
    after = log_path.read_text().splitlines()[before:]
    assert not [line for line in after if "compil" in line], "\n".join(after)


def test_sigterm_with_requests_in_flight_exits_within_seconds(server):
    url, proc, log_path = server
    answers: list = []

    def ask():
        try:
            answers.append(completion(url, MAX_TOKENS, timeout=120).status_code)
        except httpx.HTTPError as e:
            answers.append(type(e).__name__)

    clients = [threading.Thread(target=ask) for _ in range(48)]  # three batches of 16 long replies
    for c in clients:
        c.start()
    deadline = time.monotonic() + 30
    # every request has reached the model's queue or batch (one still connecting would see a closed port)
    while (state := httpx.get(url + "/health", timeout=5).json()).get("running", 0) + state.get("queued", 0) < 48:
        assert time.monotonic() < deadline, f"requests are not in flight: {state}, answers {answers}"
        time.sleep(0.1)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("serve did not exit within 10 s of SIGTERM:\n" + log_path.read_text()[-3000:])
    elapsed = time.monotonic() - start
    for c in clients:
        c.join(timeout=30)
    assert len(answers) == 48 and set(answers) <= {503, 200}, answers
    assert answers.count(503) >= 16  # the running batch and the queue are told the server is shutting down
    print(f"exited {elapsed:.1f} s after SIGTERM")
