"""SmolLM2-135M-Instruct from the shipped GGUF file: our conversion against transformers'
own GGUF loader on a real chat prompt."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import easylm_imitate
from easylm_imitate.checkpoint import read_meta
from easylm_imitate.convert.gguf_file import gguf_to_checkpoint, resolve_gguf
from easylm_imitate.models import KVCache, get_preset

NEW_TOKENS = 20


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(our model, tokenizer, checkpoint dir), converted once for the module."""
    ckpt = gguf_to_checkpoint("smollm2-135m-instruct", tmp_path_factory.mktemp("smollm2") / "ckpt")
    model, tokenizer = easylm_imitate.load(ckpt)
    return model, tokenizer, ckpt


@pytest.fixture(scope="module")
def hf_gguf():
    """transformers' float32 load of the same GGUF file."""
    from transformers import AutoModelForCausalLM

    path = resolve_gguf("smollm2-135m-instruct")
    return AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def prompt_ids(smollm2):
    _, tokenizer, _ = smollm2
    messages = [{"role": "user", "content": "Explain in two sentences why the sky is blue."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    return np.asarray([tokenizer(text)["input_ids"]], np.int64)


def test_config_is_the_published_shape(smollm2):
    model, _, _ = smollm2
    expected = get_preset("smollm2-135m")
    assert model.cfg == expected


def test_tokenizer_and_chat_template_carried(smollm2):
    model, tokenizer, ckpt = smollm2
    assert tokenizer.convert_ids_to_tokens(model.cfg.eos_token_id) == "<|im_end|>"
    assert len(tokenizer) == model.cfg.vocab_size
    assert read_meta(ckpt)["chat_template"] == tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template


def test_logits_match_transformers_gguf_load(smollm2, hf_gguf, prompt_ids):
    model, _, _ = smollm2
    with torch.no_grad():
        expected = hf_gguf(torch.from_numpy(prompt_ids)).logits.numpy()
    got = np.asarray(model(jnp.asarray(prompt_ids)))
    assert np.abs(got - expected).max() <= 1e-3


def test_twenty_greedy_tokens_identical(smollm2, hf_gguf, prompt_ids):
    model, tokenizer, _ = smollm2
    with torch.no_grad():
        hf_out = hf_gguf.generate(torch.from_numpy(prompt_ids), attention_mask=torch.ones_like(torch.from_numpy(prompt_ids)),
                                  max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1)
    expected = hf_out[0, prompt_ids.shape[1]:].tolist()
    assert len(expected) == NEW_TOKENS  # the answer is longer than 20 tokens: no early stop

    # Our greedy loop: prefill the prompt into a KV cache, then one token per step.
    graphdef, state = nnx.split(model)
    step = jax.jit(lambda state, ids, cache: nnx.merge(graphdef, state)(ids, cache=cache))
    cache = KVCache.create(model.cfg, 1, prompt_ids.shape[1] + NEW_TOKENS)
    logits, cache = step(state, jnp.asarray(prompt_ids, jnp.int32), cache)
    ours = []
    for _ in range(NEW_TOKENS):
        token = jnp.argmax(logits[:, -1], axis=-1)
        ours.append(int(token[0]))
        logits, cache = step(state, token[:, None].astype(jnp.int32), cache)
    assert ours == expected, (tokenizer.decode(ours), tokenizer.decode(expected))
    assert "Rayleigh scattering" in tokenizer.decode(ours) and model.cfg.eos_token_id not in ours
