"""Huge prompts must not stall the server: they are refused by byte size before tokenisation,
and tokenisation runs off the event loop, so other clients are answered meanwhile."""

import json
import threading
import time

import httpx
import pytest
from models.hf_helpers import TINY_TOKENIZER, random_hf_model
from transformers import AutoTokenizer

from easylm_imitate.convert.hf_weights import from_torch_model
from easylm_imitate.inference.engine import Engine
from easylm_imitate.inference.prompt_size import prompt_byte_limit
from easylm_imitate.inference.server import Limits, create_app, running_server

NAME = "tiny"
MAX_PROMPT_TOKENS = 100


@pytest.fixture(scope="module")
def engine():
    return Engine(from_torch_model(random_hf_model("tiny-llama", seed=5)),
                  AutoTokenizer.from_pretrained(TINY_TOKENIZER))


def _post(url, path, body, out, key, sent=None):
    """POST in a thread; store (status, json, finished at) under out[key]. `sent` is set once
    the whole body has been handed to the socket."""
    data = json.dumps(body).encode()

    def chunks():
        for i in range(0, len(data), 1 << 20):
            yield data[i:i + (1 << 20)]
        if sent is not None:
            sent.set()

    headers = {"content-type": "application/json", "content-length": str(len(data))}
    try:
        r = httpx.post(url + path, content=chunks(), headers=headers, timeout=300)
        out[key] = (r.status_code, r.json(), time.monotonic())
    except httpx.HTTPError as e:
        out[key] = (None, repr(e), time.monotonic())


def test_four_10mb_prompts_do_not_delay_a_normal_request(engine):
    app = create_app(engine, NAME, Limits(max_prompt_tokens=MAX_PROMPT_TOKENS, max_tokens=8, wait_ms=5))
    big = "word " * (2 * 1024 * 1024)  # 10 MiB
    bodies = [("/v1/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": big}]}),
              ("/v1/chat/completions", {"model": NAME, "messages": [{"role": "system", "content": "x"},
                                                                    {"role": "user", "content": big}]}),
              ("/v1/completions", {"model": NAME, "prompt": big}),
              ("/v1/completions", {"model": NAME, "prompt": ["hi", big]})]
    normal = {"model": NAME, "prompt": "The sky is", "max_tokens": 4}
    with running_server(app) as url:
        assert httpx.post(url + "/v1/completions", json=normal, timeout=120).status_code == 200  # compiled
        results: dict = {}
        sent = [threading.Event() for _ in bodies]
        threads = [threading.Thread(target=_post, args=(url, path, body, results, i, sent[i]))
                   for i, (path, body) in enumerate(bodies)]
        for t in threads:
            t.start()
        for event in sent:
            assert event.wait(timeout=120)
        time.sleep(0.2)  # the server has the bodies
        start = time.monotonic()
        health = httpx.get(url + "/health", timeout=2)
        answer = httpx.post(url + "/v1/completions", json=normal, timeout=2)
        elapsed = time.monotonic() - start
        for t in threads:
            t.join(timeout=150)
    assert health.status_code == 200 and answer.status_code == 200, answer.text
    assert elapsed < 2.0
    limit = prompt_byte_limit(MAX_PROMPT_TOKENS, engine.tokenizer)
    assert limit < len(big)
    for i in range(len(bodies)):
        status, body, _ = results[i]
        assert status == 400, (i, body)
        message = body["error"]["message"]
        assert body["error"]["code"] == "context_length_exceeded", body
        assert f"at most {limit} bytes" in message and "bytes of text" in message, message


def test_tokenising_a_large_allowed_prompt_leaves_the_server_responsive(engine):
    # A byte limit high enough that a 1 MiB prompt is tokenised (then refused for its tokens).
    app = create_app(engine, NAME, Limits(max_prompt_tokens=MAX_PROMPT_TOKENS, max_tokens=8,
                                          max_prompt_bytes=4 * 1024 * 1024))
    with running_server(app) as url:
        results: dict = {}
        body = {"model": NAME, "prompt": "word " * (200 * 1024)}
        sent = threading.Event()
        thread = threading.Thread(target=_post, args=(url, "/v1/completions", body, results, "big", sent))
        thread.start()
        assert sent.wait(timeout=120)
        time.sleep(0.2)
        start = time.monotonic()
        health = httpx.get(url + "/health", timeout=10)
        health_done = time.monotonic()
        thread.join(timeout=150)
    status, reply, big_done = results["big"]
    assert status == 400 and "tokens" in reply["error"]["message"], reply
    assert health.status_code == 200
    assert health_done - start < 2.0
    assert health_done < big_done  # answered while the big prompt was still being tokenised
