"""A slow server under clients that give up: work nobody waits for is dropped (queued
requests removed, running rows stopped at the next decode chunk), the queue is bounded
(429 with Retry-After), and the next client is answered promptly."""

import threading
import time

import httpx
import jax
import jax.numpy as jnp
import pytest
from jax.experimental import io_callback
from models.hf_helpers import TINY_TOKENIZER, random_hf_model
from transformers import AutoTokenizer

from easylm_imitate.convert.hf_weights import from_torch_model
from easylm_imitate.inference.engine import Engine
from easylm_imitate.inference.server import Limits, create_app, running_server

NAME = "tiny"
STEP_DELAY_S = 0.05  # per forward pass: 64 new tokens take > 3 s
SLOW = {"model": NAME, "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 64,
        "temperature": 0}
NORMAL = {"model": NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}


def slow_down(engine: Engine, delay_s: float) -> None:
    """Make every forward pass of `engine` (prefill, each decode step, scoring) sleep `delay_s`
    on device, through a host callback inside the compiled step."""
    runtime = engine.sampler.runtime
    build = runtime.model

    def sleep() -> jax.Array:
        time.sleep(delay_s)
        return jnp.zeros((), jnp.float32)

    def model(params):
        forward = build(params)

        def slowed(*args, **kwargs):
            out = forward(*args, **kwargs)
            logits, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
            logits = logits + io_callback(sleep, jax.ShapeDtypeStruct((), jnp.float32))
            return (logits, *rest) if rest is not None else logits
        return slowed

    runtime.model = model


@pytest.fixture(scope="module")
def engine():
    """A tiny model whose every forward pass takes STEP_DELAY_S."""
    engine = Engine(from_torch_model(random_hf_model("tiny-llama", seed=5)),
                    AutoTokenizer.from_pretrained(TINY_TOKENIZER))
    slow_down(engine, STEP_DELAY_S)
    return engine


def post(url: str, body: dict, timeout: float, out: list | None = None):
    """POST to chat completions; returns the response or the exception (also appended to `out`)."""
    try:
        result = httpx.post(url + "/v1/chat/completions", json=body, timeout=timeout)
    except httpx.HTTPError as e:
        result = e
    if out is not None:
        out.append(result)
    return result


def queue_state(url: str) -> dict:
    return httpx.get(url + "/health", timeout=5).json()


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_clients_that_gave_up_do_not_delay_the_next_one(engine):
    app = create_app(engine, NAME, Limits(max_prompt_tokens=100, max_tokens=64, max_batch=4, wait_ms=50))
    with running_server(app) as url:
        assert post(url, NORMAL, timeout=60).status_code == 200  # compiled (prompt and reply shape)
        results: list = []
        clients = [threading.Thread(target=post, args=(url, SLOW, 1.0, results)) for _ in range(20)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        assert len(results) == 20 and all(isinstance(r, httpx.TimeoutException) for r in results)
        start = time.monotonic()
        r = post(url, NORMAL, timeout=30)
        elapsed = time.monotonic() - start
        assert not isinstance(r, Exception) and r.status_code == 200, r
        # Without dropping abandoned work: 5 batches of 64 tokens x 0.05 s = 16 s.
        assert elapsed < 5, f"a normal request took {elapsed:.1f} s after 20 clients gave up"
        wait_for(lambda: queue_state(url)["running"] == 0, "the server to go idle")
        assert queue_state(url)["queued"] == 0


def test_a_stream_whose_client_leaves_stops_generating(engine):
    app = create_app(engine, NAME, Limits(max_prompt_tokens=100, max_tokens=64, max_batch=4, wait_ms=1))
    with running_server(app) as url:
        assert post(url, SLOW, timeout=60).status_code == 200  # compiled
        with httpx.stream("POST", url + "/v1/chat/completions", json={**SLOW, "stream": True}, timeout=30) as r:
            lines = r.iter_lines()  # (dropping the iterator would close the connection)
            assert next(lines).startswith("data: ")
            wait_for(lambda: queue_state(url)["running"] == 1, "the stream to generate")
        start = time.monotonic()  # the connection is closed now
        wait_for(lambda: queue_state(url)["running"] == 0, "the abandoned stream to stop")
        elapsed = time.monotonic() - start
        assert elapsed < 2.5, f"generation went on {elapsed:.1f} s for nobody"  # the whole reply: 3.2 s


def test_a_full_queue_answers_429_with_retry_after(engine):
    app = create_app(engine, NAME, Limits(max_prompt_tokens=100, max_tokens=64, max_batch=1, wait_ms=1,
                                          max_queue=2))
    with running_server(app) as url:
        clients = [threading.Thread(target=post, args=(url, SLOW, 3.0)) for _ in range(3)]
        clients[0].start()
        wait_for(lambda: queue_state(url)["running"] == 1, "the first request to run")
        for c in clients[1:]:
            c.start()
        wait_for(lambda: queue_state(url)["queued"] == 2, "two requests to queue")
        r = post(url, NORMAL, timeout=5)
        assert not isinstance(r, Exception), r
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        err = r.json()["error"]
        assert err["code"] == "queue_full" and "2 requests" in err["message"]
        for c in clients:
            c.join()
