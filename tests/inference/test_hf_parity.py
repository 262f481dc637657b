"""Greedy generation and scoring equal transformers' PyTorch models with the same weights:
a tiny random LLaMA, a tiny random GPT-2 and SmolLM2-135M-Instruct from the shipped GGUF."""

import numpy as np
import pytest
import torch
from models.hf_helpers import random_hf_model

from easylm_imitate.convert.gguf_file import config_from_gguf, gguf_tensor_getter, open_gguf, resolve_gguf
from easylm_imitate.convert.hf_weights import from_torch_model, model_from_params, params_from_hf, to_torch_model
from easylm_imitate.inference.sampler import Sampler
from easylm_imitate.inference.sampling import SamplingParams
from easylm_imitate.inference.scoring import Scorer

NEW = 32
LOGPROB_TOL = 1e-4


def hf_greedy(hf, prompts, pad_id, eos_ids):
    """transformers `generate` (greedy, KV cache) on a left-padded batch; new ids per row, cut at EOS."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, np.int64)
    mask = np.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):] = 1
    with torch.no_grad():
        out = hf.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), do_sample=False,
                          max_new_tokens=NEW, min_new_tokens=0, pad_token_id=pad_id,
                          eos_token_id=list(eos_ids) or None, use_cache=True)
    rows = []
    for row in out[:, width:].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos_ids), len(row))
        rows.append(row[:cut])
    return rows


def random_prompts(vocab, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, n).tolist() for n in lengths]


@pytest.fixture(scope="module")
def smollm2():
    """(our SmolLM2 from the GGUF, transformers model with the identical float32 weights, tokenizer)."""
    from easylm_imitate.convert.gguf_file import load_gguf_tokenizer

    path = resolve_gguf("smollm2-135m-instruct")
    reader = open_gguf(path)
    cfg = config_from_gguf(reader)
    ours = model_from_params(cfg, params_from_hf(cfg, gguf_tensor_getter(reader, cfg), progress=False))
    return ours, to_torch_model(ours), load_gguf_tokenizer(path)


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2"])
def test_random_model_greedy_equals_transformers_generate(preset):
    hf = random_hf_model(preset, seed=3)
    ours = from_torch_model(hf)
    prompts = random_prompts(ours.cfg.vocab_size, [7, 19, 3])
    want = hf_greedy(hf, prompts, pad_id=0, eos_ids=[])
    got = Sampler(ours).generate(prompts, SamplingParams(max_new_tokens=NEW))
    assert [g.tokens for g in got] == want
    assert all(len(w) == NEW for w in want)


def test_smollm2_greedy_equals_transformers_generate(smollm2):
    ours, hf, tok = smollm2
    questions = ["What is the capital of France?", "Name three colors of the rainbow and explain why the sky is blue.",
                 "Hi"]
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                           add_generation_prompt=True))["input_ids"] for q in questions]
    assert len({len(p) for p in prompts}) == 3
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    want = hf_greedy(hf, prompts, pad_id=tok.pad_token_id or 0, eos_ids=eos)
    got = Sampler(ours).generate(prompts, SamplingParams(max_new_tokens=NEW), eos_ids=eos)
    assert [g.tokens for g in got] == want
    assert any(len(w) == NEW for w in want)  # some row really runs 32 tokens
    assert "Paris" in tok.decode(got[0].tokens)


def test_smollm2_scores_equal_transformers_log_softmax(smollm2):
    ours, hf, tok = smollm2
    seqs = [tok("The capital of France is Paris.")["input_ids"], tok("One, two, three, four")["input_ids"]]
    scores = Scorer(ours).score(seqs, top=2)
    for seq, s in zip(seqs, scores):
        with torch.no_grad():
            logp = torch.log_softmax(hf(torch.tensor([seq])).logits[0].double(), -1).numpy()
        want = logp[np.arange(len(seq) - 1), seq[1:]]
        np.testing.assert_allclose(s.logprobs, want, atol=LOGPROB_TOL)
        np.testing.assert_array_equal(s.greedy, logp[:-1].argmax(-1) == np.asarray(seq[1:]))
        np.testing.assert_array_equal(s.top_ids[:, 0], logp[:-1].argmax(-1))
