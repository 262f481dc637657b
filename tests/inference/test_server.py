"""The OpenAI-compatible server, run for real with uvicorn on 127.0.0.1, driven by the
official `openai` client and raw HTTP."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
import torch
from models.hf_helpers import TINY_TOKENIZER, random_hf_model
from support.eos_model import eos_prone_hf_model
from transformers import AutoTokenizer

from easylm_imitate.convert.hf_weights import from_torch_model
from easylm_imitate.inference.engine import Engine, GenRequest
from easylm_imitate.inference.sampling import SamplingParams
from easylm_imitate.inference.server import Limits, create_app, running_server

NAME = "tiny"
MESSAGES = [{"role": "user", "content": "What color is a banana?"}]


@pytest.fixture(scope="module")
def stack():
    """(torch model, engine, app, base URL, openai client) with the server running."""
    hf = random_hf_model("tiny-llama", seed=5)
    engine = Engine(from_torch_model(hf), AutoTokenizer.from_pretrained(TINY_TOKENIZER))
    app = create_app(engine, NAME, Limits(max_prompt_tokens=100, max_tokens=64, max_batch=32, wait_ms=20))
    with running_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        yield hf, engine, app, url, client


def direct(engine, ids, n=8):
    return engine.generate([GenRequest(ids, SamplingParams(max_new_tokens=n))])[0]


def test_models_and_health(stack):
    _, _, _, url, client = stack
    assert [m.id for m in client.models.list().data] == [NAME]
    assert httpx.get(url + "/health").json()["status"] == "ok"


def test_openai_client_chat_plain_and_streaming(stack):
    _, engine, _, _, client = stack
    want = direct(engine, engine.chat_ids(MESSAGES))
    resp = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=8, temperature=0)
    assert resp.choices[0].message.content == want.text
    assert resp.choices[0].finish_reason == want.finish_reason
    assert resp.usage.completion_tokens == len(want.token_ids)
    stream = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=8, temperature=0, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want.text
    assert chunks[-1].choices[0].finish_reason == want.finish_reason


def test_openai_client_completions_stream_and_stop(stack):
    _, engine, _, _, client = stack
    want = direct(engine, engine.encode("The sky is"), n=16)
    resp = client.completions.create(model=NAME, prompt="The sky is", max_tokens=16, temperature=0)
    assert resp.choices[0].text == want.text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=NAME, prompt="The sky is", max_tokens=16, temperature=0, stream=True))
    assert streamed == want.text
    stop = want.text[3:5]
    cut = client.completions.create(model=NAME, prompt="The sky is", max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].text == want.text[:want.text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_echo_logprobs_equal_torch(stack):
    hf, engine, _, _, client = stack
    text = "What is 12 plus 7? Sure! 12 plus 7 equals 19."
    resp = client.completions.create(model=NAME, prompt=text, echo=True, logprobs=1, max_tokens=0, temperature=0)
    lp = resp.choices[0].logprobs
    assert resp.choices[0].text == text and "".join(lp.tokens) == text
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    ids = engine.encode(text)
    with torch.no_grad():
        logp = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1).numpy()
    want = logp[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(lp.token_logprobs[1:], want, atol=1e-4)
    for i, top in enumerate(lp.top_logprobs[1:]):
        assert max(top.values()) == pytest.approx(logp[i].max(), abs=1e-4)
    # lm-evaluation-harness style: token-id prompts, echo, one generated token.
    batch = client.completions.create(model=NAME, prompt=[ids, ids[:5]], echo=True, logprobs=1, max_tokens=1,
                                      temperature=0)
    first = sorted(batch.choices, key=lambda c: c.index)[0].logprobs
    assert len(first.tokens) == len(ids) + 1
    np.testing.assert_allclose(first.token_logprobs[1:len(ids)], want, atol=1e-4)


def test_twenty_concurrent_clients_get_their_answers(stack):
    _, engine, app, url, _ = stack
    prompts = [f"What is {a} plus {a + 3}?" for a in range(20)]
    want = engine.generate([GenRequest(engine.chat_ids([{"role": "user", "content": p}]),
                                       SamplingParams(max_new_tokens=8)) for p in prompts])
    batches_before = app.state.batcher.batches_run

    def ask(p):
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        r = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": p}],
                                           max_tokens=8, temperature=0)
        return r.choices[0].message.content

    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(ask, prompts))
    assert got == [w.text for w in want]
    assert app.state.batcher.batches_run - batches_before < 20  # requests were batched together


BAD = [
    ("invalid json", "/v1/chat/completions", b"{not json"),
    ("wrong type", "/v1/chat/completions", {"model": NAME, "messages": MESSAGES, "max_tokens": "lots"}),
    ("negative max_tokens", "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": -1}),
    ("huge max_tokens", "/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 10 ** 9}),
    ("unknown model", "/v1/chat/completions", {"model": "gpt-17", "messages": MESSAGES}),
    ("empty messages", "/v1/chat/completions", {"model": NAME, "messages": []}),
    ("missing prompt", "/v1/completions", {"model": NAME}),
    ("bad role", "/v1/chat/completions", {"model": NAME, "messages": [{"role": "wizard", "content": "x"}]}),
    ("temperature out of range", "/v1/completions", {"model": NAME, "prompt": "hi", "temperature": 9}),
    ("token id outside vocab", "/v1/completions", {"model": NAME, "prompt": [1, 99999]}),
    ("prompt too long", "/v1/completions", {"model": NAME, "prompt": "word " * 400}),
    ("body not an object", "/v1/completions", [1, 2, 3]),
    ("unknown route", "/v1/nothing", {}),
]


@pytest.mark.parametrize("label,path,body", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_4xx_with_openai_error_body(stack, label, path, body):
    url = stack[3]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(url + path, content=content, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (label, r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]


def test_server_keeps_serving_after_bad_requests(stack):
    client = stack[4]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=NAME, prompt="hi", max_tokens=-5)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert client.completions.create(model=NAME, prompt="hi", max_tokens=2, temperature=0).choices[0].finish_reason


@pytest.fixture(scope="module")
def eos_stack():
    """(torch model, engine, base URL, openai client) for a tiny model that often ends text."""
    hf = eos_prone_hf_model()
    engine = Engine(from_torch_model(hf), AutoTokenizer.from_pretrained(TINY_TOKENIZER))
    with running_server(create_app(engine, NAME, Limits(max_prompt_tokens=100, max_tokens=64))) as url:
        yield hf, engine, url, openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)


def ends_with_eos(hf, engine, prompts, chat=False):
    """(prompt, its ids, generated ids, EOS id) of the first prompt whose greedy generation
    (by the torch model) ends with end-of-sequence after 1 to 15 other tokens."""
    for p in prompts:
        ids = engine.chat_ids([{"role": "user", "content": p}]) if chat else engine.encode(p)
        gen = []
        while len(gen) < 16:
            with torch.no_grad():
                token = int(hf(torch.tensor([ids + gen])).logits[0, -1].argmax())
            if token in engine.eos_ids:
                if gen:
                    return p, ids, gen, token
                break
            gen.append(token)
    raise AssertionError("no prompt ends with end-of-sequence; pick other prompts")


def torch_logprobs(hf, ids):
    """[len(ids) - 1, vocab] float64 log-probs of each next token."""
    with torch.no_grad():
        return torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1).numpy()[:-1]


CANDIDATES = ["The opposite of hot is", "One two three", "The list: one, two,", "Hello there", "Once upon a time"]


def test_completion_logprobs_include_the_generated_end_of_sequence_token(eos_stack):
    hf, engine, _, client = eos_stack
    prompt, ids, gen, eos = ends_with_eos(hf, engine, CANDIDATES)
    eos_text = engine.tokenizer.decode([eos])
    resp = client.completions.create(model=NAME, prompt=prompt, max_tokens=16, temperature=0, logprobs=2)
    choice = resp.choices[0]
    choice_lp = choice.logprobs
    assert choice.text == engine.decode(gen) and eos_text not in choice.text and choice.finish_reason == "stop"
    assert choice_lp.tokens == engine.id_pieces(gen, prefix=ids) + [eos_text]
    full = ids + gen + [eos]
    logp = torch_logprobs(hf, full)
    rows = np.arange(len(ids) - 1, len(full) - 1)
    np.testing.assert_allclose(choice_lp.token_logprobs, logp[rows, full[len(ids):]], atol=1e-4)
    assert [max(t.values()) for t in choice_lp.top_logprobs] == pytest.approx(logp[rows].max(-1), abs=1e-4)
    assert choice_lp.text_offset[-1] == len(choice.text)  # EOS sits at the end; its text is not in `text`
    assert resp.usage.completion_tokens == len(gen) + 1
    stream = list(client.completions.create(model=NAME, prompt=prompt, max_tokens=16, temperature=0, logprobs=2,
                                            stream=True))
    assert [t for c in stream for ch in c.choices if ch.logprobs for t in ch.logprobs.tokens] == choice_lp.tokens
    # lm-evaluation-harness: echo the prompt, one generated token, read token_logprobs[ctxlen:-1].
    ctx = len(ids) - 2
    seq = client.completions.create(model=NAME, prompt=full[:-1], echo=True, logprobs=1, max_tokens=1, temperature=0)
    lps = seq.choices[0].logprobs
    assert len(lps.token_logprobs) == len(full) and lps.tokens[-1] == eos_text
    assert sum(lps.token_logprobs[ctx:-1]) == pytest.approx(logp[np.arange(ctx - 1, len(full) - 2),
                                                                 full[ctx:-1]].sum(), abs=1e-4)


def test_chat_logprobs_include_the_generated_end_of_sequence_token(eos_stack):
    hf, engine, _, client = eos_stack
    prompt, ids, gen, eos = ends_with_eos(hf, engine, CANDIDATES, chat=True)
    eos_text = engine.tokenizer.decode([eos])
    messages = [{"role": "user", "content": prompt}]
    resp = client.chat.completions.create(model=NAME, messages=messages, max_tokens=16, temperature=0,
                                          logprobs=True, top_logprobs=3)
    assert resp.choices[0].logprobs is not None, "logprobs=true but the response has none"
    content = resp.choices[0].logprobs.content
    assert resp.choices[0].message.content == engine.decode(gen) and eos_text not in engine.decode(gen)
    assert [c.token for c in content] == engine.id_pieces(gen, prefix=ids) + [eos_text]
    assert content[-1].bytes == list(eos_text.encode())
    full = ids + gen + [eos]
    logp = torch_logprobs(hf, full)
    rows = np.arange(len(ids) - 1, len(full) - 1)
    np.testing.assert_allclose([c.logprob for c in content], logp[rows, full[len(ids):]], atol=1e-4)
    assert all(len(c.top_logprobs) == 3 for c in content)
    np.testing.assert_allclose([c.top_logprobs[0].logprob for c in content], logp[rows].max(-1), atol=1e-4)
    assert resp.usage.completion_tokens == len(content)
    stream = list(client.chat.completions.create(model=NAME, messages=messages, max_tokens=16, temperature=0,
                                                 logprobs=True, stream=True))
    streamed = [c for chunk in stream for choice in chunk.choices if choice.logprobs
                for c in choice.logprobs.content]
    assert [c.token for c in streamed] == [c.token for c in content]
    plain = client.chat.completions.create(model=NAME, messages=messages, max_tokens=16, temperature=0)
    assert plain.choices[0].logprobs is None


def test_many_stop_strings_are_accepted(eos_stack):
    _, engine, url, client = eos_stack
    want = direct(engine, engine.encode("The opposite of hot is"), n=16)
    stops = [f"#{i}#" for i in range(9)] + ["</s>"]  # lm-eval adds the EOS string to a task's own
    resp = client.completions.create(model=NAME, prompt="The opposite of hot is", max_tokens=16, temperature=0,
                                     stop=stops)
    assert resp.choices[0].text == want.text
    r = httpx.post(url + "/v1/completions", json={"model": NAME, "prompt": "hi", "stop": [str(i) for i in range(65)]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop"
    r = httpx.post(url + "/v1/chat/completions", json={"model": NAME, "messages": MESSAGES, "top_logprobs": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_logprobs"


def test_error_messages_name_the_problem_and_the_field_the_client_sent(stack):
    url = stack[3]

    def error(path, content: bytes):
        r = httpx.post(url + path, content=content, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        return r.json()["error"]

    err = error("/v1/chat/completions", b'{"model": "tiny",\n  "messages": [}')
    assert err["param"] is None
    assert err["message"].startswith("invalid JSON") and "line 2, column 16" in err["message"], err
    for value in (b"NaN", b"Infinity"):
        err = error("/v1/completions", b'{"model": "tiny", "prompt": "hi", "temperature": %s}' % value)
        assert err["param"] == "temperature" and "finite number" in err["message"], err
    body = {"model": NAME, "messages": MESSAGES, "max_completion_tokens": 10 ** 6}
    err = error("/v1/chat/completions", json.dumps(body).encode())
    assert err["param"] == "max_completion_tokens", err
    assert err["message"].startswith("max_completion_tokens=1000000 exceeds"), err
    body = {"model": NAME, "messages": MESSAGES, "max_tokens": 10 ** 6}
    assert error("/v1/chat/completions", json.dumps(body).encode())["param"] == "max_tokens"
