"""Distillation end to end: SmolLM2-135M (the shipped GGUF) served by our server is the
target; its replies and top-5 log-probs, collected with the official `openai` client, train
a tiny random student with SmolLM2's tokenizer, and the logged KL to the target falls."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
import openai
import pytest
from support.train_helpers import smoke_config

from easylm_imitate import checkpoint
from easylm_imitate.api import model_from_params
from easylm_imitate.convert.gguf_file import config_from_gguf, gguf_tensor_getter, open_gguf, resolve_gguf
from easylm_imitate.convert.hf_weights import params_from_hf
from easylm_imitate.data import train_loader
from easylm_imitate.data.target_logprobs import KEY
from easylm_imitate.inference.engine import Engine
from easylm_imitate.inference.server import Limits, create_app, running_server
from easylm_imitate.model_names import load_tokenizer
from easylm_imitate.models import build_model, get_preset

PROMPTS = ["What colour is the sky?", "Name a fruit.", "Say hello.", "What is two plus two?",
           "Name an animal.", "What is the capital of France?"]


def smollm2_target():
    """SmolLM2-135M-Instruct from the shipped GGUF, in memory (what `convert` would write)."""
    path = resolve_gguf("smollm2-135m-instruct")
    reader = open_gguf(path)
    cfg = config_from_gguf(reader)
    params = params_from_hf(cfg, gguf_tensor_getter(reader, cfg), progress=False, source=path)
    model = model_from_params(cfg, lambda target: jax.tree.map(lambda a, v: jax.device_put(v, a.sharding),
                                                               target, params))
    return model, load_tokenizer(path)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """(canonical records with meta.target_logprobs, SmolLM2's tokenizer)."""
    root = tmp_path_factory.mktemp("distill")
    model, tokenizer = smollm2_target()
    app = create_app(Engine(model, tokenizer), "smollm2", Limits(max_prompt_tokens=128, max_tokens=16, max_batch=8))
    with running_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)

        def ask(prompt):
            return client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": prompt}],
                                                  max_tokens=16, temperature=0, logprobs=True, top_logprobs=5)

        with ThreadPoolExecutor(len(PROMPTS)) as pool:  # answered together, in one batch
            replies = list(pool.map(ask, PROMPTS))
    records = []
    for i, (prompt, reply) in enumerate(zip(PROMPTS, replies)):
        choice = reply.choices[0]
        records.append({"id": f"smollm2-{i}", "source": "smollm2",
                        "turns": [{"role": "user", "text": prompt}, {"role": "assistant", "text": choice.message.content}],
                        "meta": {KEY: [[t.model_dump() for t in choice.logprobs.content]]}})
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path), records, tokenizer, root


def student(root, tokenizer) -> str:
    """A tiny random LLaMA with SmolLM2's vocabulary and tokenizer, as a checkpoint."""
    from flax import nnx

    cfg = get_preset("tiny-llama", vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2)
    params = nnx.state(build_model(cfg, 0)).to_pure_dict()
    return checkpoint.save_params(root / "student", cfg, params, tokenizer)


def test_collected_replies_carry_the_targets_top5(collected):
    _, records, _, _ = collected
    for r in records:
        content = r["meta"][KEY][0]
        assert content and all(len(t["top_logprobs"]) == 5 for t in content)
        assert "".join(t["token"] for t in content).startswith(r["turns"][1]["text"])


def test_distill_kl_falls_training_a_student_on_smollm2s_logprobs(collected):
    from easylm_imitate.train.trainer import train

    path, records, tokenizer, root = collected
    config = smoke_config(**{"init_from": student(root, tokenizer), "tokenizer": "", "data.train_file": path,
                             "data.eval_file": "", "data.template": "chatml", "distill.alpha": 1.0,
                             "distill.top_k": 5, "total_steps": 24, "log_every_steps": 1,
                             "save_every_steps": 1000, "eval_every_steps": 0, "batch_size": 8, "seq_length": 64,
                             "optimizer.warmup_steps": 0})
    logs = []
    result = train(config, str(root / "run"), log=logs.append)
    kls = [h["distill_kl"] for h in result.history if "distill_kl" in h]
    assert len(kls) == 24, logs
    tokens = [h["distill_tokens"] for h in result.history if "distill_tokens" in h]
    assert min(tokens) > 0
    assert np.mean(kls[-5:]) < 0.5 * np.mean(kls[:5]), kls
    with open(root / "run" / "rejects.jsonl") as f:
        rejects = [json.loads(line) for line in f]
    assert len(rejects) <= len(records) // 2, rejects  # most replies map onto the student's tokens


def test_a_student_with_another_tokenizer_is_refused_with_a_clear_error(collected):
    from easylm_imitate.train.trainer import train

    path, _, _, root = collected
    config = smoke_config(**{"data.train_file": path, "data.eval_file": "", "data.template": "chatml",
                             "distill.alpha": 1.0})
    with pytest.raises(train_loader.DataError, match=r"record 'smollm2-\d'.*is not a token of the student's tokenizer"):
        train(config, str(root / "other"), log=lambda *_: None)
