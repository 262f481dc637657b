"""A request of a new shape says it is compiling (a cold request can take a minute on a big
model), and `Engine.warmup` compiles a shape ahead so a request of it logs nothing."""

import logging

import pytest
from models.hf_helpers import TINY_TOKENIZER, random_hf_model
from transformers import AutoTokenizer

from easylm_imitate.convert.hf_weights import from_torch_model
from easylm_imitate.inference.engine import Engine, GenRequest
from easylm_imitate.inference.sampling import SamplingParams


@pytest.fixture()
def engine():
    return Engine(from_torch_model(random_hf_model("tiny-llama", seed=2)),
                  AutoTokenizer.from_pretrained(TINY_TOKENIZER))


def compile_lines(caplog) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if "compil" in r.getMessage()]
    caplog.clear()
    return lines


def test_a_new_shape_logs_that_it_compiles_and_a_seen_one_does_not(engine, caplog):
    caplog.set_level(logging.INFO, logger="easylm_imitate")
    ids = engine.encode("The sky is")
    engine.generate([GenRequest(ids, SamplingParams(max_new_tokens=20))] * 3)
    lines = compile_lines(caplog)
    assert any(line.startswith("compiling generation prefill (batch 4, prompt 16 tokens, 32 new tokens, greedy)")
               for line in lines), lines
    assert any(line.startswith("compiling generation decode (batch 4, prompt 16 tokens, 32 new tokens, greedy)")
               for line in lines), lines
    assert any(line.startswith("compiled generation decode") and line.endswith(" s") for line in lines), lines
    engine.generate([GenRequest(ids + ids, SamplingParams(max_new_tokens=30))] * 4)  # same buckets
    assert compile_lines(caplog) == []
    engine.score([ids + ids], top=2)
    assert any(line.startswith("compiling scoring (batch 1, 16 tokens, top 2)") for line in compile_lines(caplog))


def test_warmup_compiles_the_shapes_requests_then_use(engine, caplog):
    caplog.set_level(logging.INFO, logger="easylm_imitate")
    shapes = engine.warmup(rows=[1, 8], prompt_tokens=[20, 100], max_tokens=[24])
    assert shapes == [(1, 32, 32), (1, 128, 32), (8, 32, 32), (8, 128, 32)]
    assert len(compile_lines(caplog)) >= 8  # prefill and decode per shape
    for rows in (1, 5, 8):
        for length in (17, 32, 65, 128):
            engine.generate([GenRequest([7] * length, SamplingParams(max_new_tokens=17))] * rows)
    assert compile_lines(caplog) == []
