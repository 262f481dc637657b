"""CheckpointBackend: the evaluation protocol over a saved checkpoint, and the serve binary
run as a real process against the same checkpoint."""

import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from flax import nnx
from models.hf_helpers import TINY_TOKENIZER, random_hf_model
from transformers import AutoTokenizer

from easylm_imitate import checkpoint
from easylm_imitate.convert.hf_weights import from_torch_model
from easylm_imitate.evaluation.backends import LMBackend
from easylm_imitate.evaluation.checkpoint_backend import CheckpointBackend
from easylm_imitate.inference.server import free_port


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(torch model, tokenizer, checkpoint dir) of a tiny random LLaMA."""
    hf = random_hf_model("tiny-llama", seed=9)
    ours = from_torch_model(hf)
    tok = AutoTokenizer.from_pretrained(TINY_TOKENIZER)
    path = checkpoint.save_params(tmp_path_factory.mktemp("ckpt") / "tiny-ckpt", ours.cfg,
                                  nnx.state(ours).to_pure_dict(), tokenizer=tok)
    return hf, tok, path


@pytest.fixture(scope="module")
def backend(saved):
    return CheckpointBackend(saved[2], batch_size=4)


def test_is_an_lm_backend_named_after_the_checkpoint(backend):
    assert isinstance(backend, LMBackend) and backend.name == "tiny-ckpt"


def test_loglikelihood_equals_torch(saved, backend):
    hf, tok, _ = saved
    # The second context's trailing space moves onto the continuation (lm-eval's convention).
    pairs = [("What color is a lime?", " green"), ("The capital of Peru is ", "Lima")]
    moved = [("What color is a lime?", " green"), ("The capital of Peru is", " Lima")]
    for (ctx, cont), (lp, greedy) in zip(moved, backend.loglikelihood(pairs)):
        whole, n_ctx = tok(ctx + cont)["input_ids"], len(tok(ctx)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(hf(torch.tensor([whole])).logits[0].double(), -1).numpy()
        targets = np.arange(n_ctx, len(whole))
        assert lp == pytest.approx(logp[targets - 1, np.asarray(whole)[targets]].sum(), abs=1e-4)
        assert greedy == bool(np.all(logp[targets - 1].argmax(-1) == np.asarray(whole)[targets]))


def test_generate_and_chat_shapes_stop_and_determinism(backend):
    out = backend.generate(["Sure! 5 plus", "A ripe"], max_new_tokens=8, stop=[], temperature=0.0, n=2)
    assert len(out) == 2 and all(len(o) == 2 and o[0] == o[1] for o in out)
    stop = out[0][0][2:4]
    cut = backend.generate(["Sure! 5 plus"], max_new_tokens=8, stop=[stop])[0][0]
    assert cut == out[0][0][:out[0][0].index(stop)]
    sampled = backend.generate(["A ripe"], max_new_tokens=8, stop=[], temperature=1.0, n=2, seed=4)
    assert sampled == backend.generate(["A ripe"], max_new_tokens=8, stop=[], temperature=1.0, n=2, seed=4)
    chats = backend.chat([[{"role": "user", "content": "Hi"}]] * 3, max_new_tokens=6)
    assert len(chats) == 3 and chats[0] == chats[1] == chats[2]


def test_serve_binary_serves_the_checkpoint(saved):
    port = free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "easylm_imitate.serve", f"--checkpoint={saved[2]}",
                             f"--port={port}", "--max_tokens_limit=32"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.3)
        r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "tiny-ckpt", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
        assert httpx.post(url + "/v1/completions", json={"model": "tiny-ckpt", "prompt": "x",
                                                         "max_tokens": 33}).status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)
