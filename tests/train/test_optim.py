"""Schedules, the weight-decay mask and the paper's optimizer."""

from __future__ import annotations

import jax
import numpy as np
import optax
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


# Weight decay: decoupled and multiplied by the schedule's current learning rate in both
# optimizers (p <- p - lr(t) * wd * p), on matrices and embeddings only.

OPTIMIZER_NAMES = ["adamw", "adafactor_scaled"]


def _tiny_gpt2_params():
    """Real parameters (with norms and biases) of tiny-gpt2 and its decay mask."""
    from flax import nnx

    from easylm_imitate.models import build_model

    cfg = get_preset("tiny-gpt2")
    params = nnx.state(build_model(cfg, seed=0)).to_pure_dict()
    return params, optim.decay_mask(logical_axes(cfg))


def _zero_gradient_run(name: str, lr: float, wd: float, steps: int, warmup: int = 0):
    """(start, end, decay mask) after `steps` zero-gradient updates of the configured optimizer."""
    params, mask = _tiny_gpt2_params()
    cfg = smoke_config(**{"optimizer.name": name, "learning_rate": lr, "optimizer.weight_decay": wd,
                          "optimizer.warmup_steps": warmup, "optimizer.schedule": "constant"})
    tx, _ = optim.make_optimizer(cfg.optimizer, max(steps, warmup + 1), mask)
    zeros = jax.tree.map(np.zeros_like, params)

    @jax.jit
    def run(p):
        def body(_, carry):
            p, s = carry
            updates, s = tx.update(zeros, s, p)
            return optax.apply_updates(p, updates), s

        return jax.lax.fori_loop(0, steps, body, (p, tx.init(p)))[0]

    return params, jax.tree.map(np.asarray, run(params)), mask


def _rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(x, np.float64)))))


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_zero_gradient_at_learning_rate_zero_changes_nothing(name):
    # The first step of a warm-up from 0: lr(0) = 0, so no parameter may move at all.
    start, end, _ = _zero_gradient_run(name, lr=2e-3, wd=1e-3, steps=1, warmup=1000)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(start)[0], jax.tree.leaves(end)):
        assert np.array_equal(np.asarray(a), b), path


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_paper_weight_decay_keeps_matrices_over_1000_steps(name):
    # configs/imitation_common.py's lr 2e-3 and wd 1e-3 at the full rate: the decay per step is
    # lr * wd = 2e-6, so 1000 steps keep (1 - 2e-6)^1000 ~ 0.998 of each matrix.
    start, end, _ = _zero_gradient_run(name, lr=2e-3, wd=1e-3, steps=1000)
    for key in ("wq", "w_fc"):
        ratio = _rms(end["blocks"][key]) / _rms(start["blocks"][key])
        assert 0.99 <= ratio < 1.0, (key, ratio)
    assert 0.99 <= _rms(end["wte"]) / _rms(start["wte"]) < 1.0


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_weight_decay_shrinks_by_lr_times_wd_per_step_and_skips_norms_and_biases(name):
    steps, lr, wd = 10, 0.5, 0.1
    start, end, mask = _zero_gradient_run(name, lr=lr, wd=wd, steps=steps)
    expected = (1 - lr * wd) ** steps  # 0.5987
    flat_mask = dict(jax.tree_util.tree_flatten_with_path(mask)[0])
    flat_end = dict(jax.tree_util.tree_flatten_with_path(end)[0])
    for path, a in jax.tree_util.tree_flatten_with_path(start)[0]:
        b = flat_end[path]
        if flat_mask[path]:
            np.testing.assert_allclose(b, np.asarray(a) * expected, rtol=1e-5, atol=1e-7, err_msg=str(path))
        else:
            assert np.array_equal(np.asarray(a), b), path  # norm scales and biases never change
