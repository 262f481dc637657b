"""Schedules, the weight-decay mask and the paper's optimizer."""

from __future__ import annotations

import numpy as np
import pytest

from easylm_imitate.models import get_preset
from easylm_imitate.train import optim
from easylm_imitate.train.state import logical_axes
from support.train_helpers import smoke_config


def test_warmup_is_linear_from_zero_then_constant():
    s = optim.learning_rate_schedule(2e-3, 1000, 5000, "constant")
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(float(s(500)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose([float(s(1000)), float(s(4999))], [2e-3, 2e-3], rtol=1e-6)


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_decay_reaches_the_end_ratio(decay):
    s = optim.learning_rate_schedule(1.0, 10, 110, decay, end_lr_ratio=0.1)
    np.testing.assert_allclose(float(s(10)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(s(110)), 0.1, rtol=1e-5)
    assert float(s(60)) < 1.0


def test_weight_decay_skips_norms_and_biases():
    mask = optim.decay_mask(logical_axes(get_preset("tiny-gpt2")))
    assert mask["blocks"]["wq"] and mask["blocks"]["w_fc"] and mask["wte"]
    for name in ("ln1_scale", "ln1_bias", "bq", "bo", "b_fc", "ln2_scale"):
        assert not mask["blocks"][name], name
    assert not mask["lnf_scale"] and not mask["lnf_bias"]
    llama = optim.decay_mask(logical_axes(get_preset("tiny-llama")))
    assert not llama["blocks"]["attn_norm"] and not llama["final_norm"] and llama["lm_head"]


def test_unknown_optimizer_or_schedule_is_named():
    cfg = smoke_config()
    cfg.optimizer.name = "sgdd"
    with pytest.raises(ValueError, match="sgdd"):
        optim.make_optimizer(cfg.optimizer, 10, None)
    with pytest.raises(ValueError, match="wavy"):
        optim.learning_rate_schedule(1.0, 1, 10, "wavy")


def test_paper_optimizer_learns(tmp_path):
    from easylm_imitate.train.trainer import train

    cfg = smoke_config(**{"optimizer.name": "adafactor_scaled", "learning_rate": 0.1, "total_steps": 60,
                          "eval_every_steps": 0, "save_every_steps": 60})
    result = train(cfg, str(tmp_path), log=lambda *_: None)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] <= 0.5 * losses[0], losses
