"""Optimizers, learning-rate schedules and the weight-decay mask.

Optimizers (`config.optimizer.name`):
- `adamw`: optax AdamW with decoupled weight decay on matrices only.
- `adafactor_scaled` (alias `palm`): the paper's "AdamW with gradients re-scaled by the
  magnitude of each weight": a non-factored Adafactor update with first-moment momentum and
  `multiply_by_parameter_scale` (each update is scaled by the RMS of its parameter), as
  in EasyLM's trainer.
Both sit behind global-norm clipping and use one schedule: linear warm-up from 0 to the
peak rate, then constant, cosine or linear decay to `end_lr_ratio` x peak.

`weight_decay` means the same in both: decoupled decay scaled by the schedule's current
rate, `p <- p - lr(t) * weight_decay * p` each step (as AdamW and EasyLM's trainer apply
it), on weight matrices and embeddings only (`decay_mask`). So at lr 0 nothing decays, and
the paper's lr 2e-3 with weight_decay 1e-3 shrinks a matrix by 2e-6 per step.
"""

from __future__ import annotations

import jax
import optax

SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adamw", "adafactor_scaled", "palm")


def learning_rate_schedule(peak: float, warmup_steps: int, total_steps: int, decay: str = "constant",
                           end_lr_ratio: float = 0.0) -> optax.Schedule:
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then `decay` until `total_steps`."""
    if decay not in SCHEDULES:
        raise ValueError(f"optimizer.schedule: unknown schedule {decay!r} (expected one of {SCHEDULES})")
    warmup = optax.linear_schedule(0.0, peak, max(warmup_steps, 1))
    rest = max(total_steps - warmup_steps, 1)
    if decay == "constant":
        after = optax.constant_schedule(peak)
    elif decay == "cosine":
        after = optax.cosine_decay_schedule(peak, rest, alpha=end_lr_ratio)
    else:
        after = optax.linear_schedule(peak, peak * end_lr_ratio, rest)
    if warmup_steps <= 0:
        return after
    return optax.join_schedules([warmup, after], [warmup_steps])


def decay_mask(logical_axes_tree):
    """True for parameters that get weight decay: those with an `embed` axis.

    That is every weight matrix and embedding (each maps from or to the model dimension);
    norm scales and biases never have it, so they are never decayed.
    """
    return jax.tree.map(lambda axes: "embed" in axes, logical_axes_tree, is_leaf=lambda x: isinstance(x, tuple))


def make_optimizer(opt_cfg, total_steps: int, mask) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, schedule) from the `optimizer` section of a training config."""
    name = opt_cfg.name
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name: unknown optimizer {name!r} (expected one of {OPTIMIZERS})")
    schedule = learning_rate_schedule(opt_cfg.learning_rate, opt_cfg.warmup_steps, total_steps,
                                      opt_cfg.schedule, opt_cfg.end_lr_ratio)
    parts = []
    if opt_cfg.clip_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(opt_cfg.clip_grad_norm))
    if name == "adamw":
        parts.append(optax.adam(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps))
    else:
        parts.append(optax.adafactor(learning_rate=schedule, multiply_by_parameter_scale=True,
                                     factored=False, momentum=opt_cfg.b1, decay_rate=opt_cfg.b2,
                                     clipping_threshold=None))
    if opt_cfg.weight_decay:
        parts.append(scheduled_weight_decay(schedule, opt_cfg.weight_decay, mask))
    return optax.chain(*parts), schedule


def scheduled_weight_decay(schedule: optax.Schedule, weight_decay: float, mask) -> optax.GradientTransformation:
    """Adds `-schedule(t) * weight_decay * p` to the (already signed, descent-direction)
    updates of the parameters `mask` selects: decoupled decay proportional to the current
    learning rate. Its own step count runs in step with the optimizer's schedule."""
    return optax.add_decayed_weights(lambda count: -schedule(count) * weight_decay, mask=mask)
