"""The LoRA train and eval steps: the ordinary loss with each targeted projection computing
`x @ W + scale * dropout(x) @ A @ B` (peft's unmerged form), differentiated with respect to
the adapters only.

The train state's `params` are the adapters; the frozen (possibly quantised) base is a
separate, non-donated argument of the jitted step, so it gets no gradient and no optimizer
state. The adapters and the base's stacked projections go into the layer scan as they are
stored: a quantised projection is dequantised there, one layer at a time, so no float copy of
the whole base is ever made. Gradient accumulation, both optimizers, the remat policies and
the non-finite guard are the ordinary step's (`train.step.train_step` with `loss_fn`).

`lora.dropout` masks each projection's adapter input with a key drawn from the run's seed,
the step, the micro-batch, the layer and the projection, so a resumed run draws the same
masks.
"""

from __future__ import annotations

import functools

import jax

from easylm_imitate import parallel
from easylm_imitate.lora import quant
from easylm_imitate.lora.adapters import LoraSpec
from easylm_imitate.models import modules
from easylm_imitate.train import step as step_lib


def model_inputs(base: dict, adapters: dict, spec: LoraSpec, key: jax.Array | None):
    """What the model runs on: its parameters (quantised projections left as shape-only
    placeholders: the forward pass never reads them), the stacked entries it takes as stored
    instead (`blocks=`), and the adapters (`adapters=`)."""
    replaced = {name: w for name, w in base["blocks"].items() if quant.is_quantized(w)}
    params = {**base, "blocks": {**base["blocks"], **{name: jax.ShapeDtypeStruct(w.shape, w.codes.dtype)
                                                       for name, w in replaced.items()}}}
    block_adapters = modules.Adapters(stacked=adapters["blocks"], key=key, scale=spec.scale, dropout=spec.dropout)
    return params, {"blocks": replaced, "adapters": block_adapters}


def lora_loss_terms(graphdef, adapters, batch, *, base, spec: LoraSpec, rng=None):
    """`step.loss_terms` of the model with adapters `adapters` on the frozen `base` (`rng`:
    the micro-batch's dropout key, None in evaluation)."""
    params, forward = model_inputs(base, adapters, spec, rng)
    return step_lib.loss_terms(graphdef, params, batch, **forward)


def dropout_key(seed: int, step: jax.Array) -> jax.Array:
    """The adapters' dropout key of optimizer step `step` of a run seeded `seed`."""
    return jax.random.fold_in(jax.random.key(seed), step)


def lora_train_step(graphdef, optimizer, schedule, accum: int, spec: LoraSpec, seed: int, state, base, batch,
                    skip_nonfinite: bool = False):
    """One optimizer update of the adapters in `state.params` over the frozen `base`."""
    loss_fn = functools.partial(lora_loss_terms, base=base, spec=spec)
    rng = dropout_key(seed, state.step) if spec.dropout > 0 else None
    return step_lib.train_step(graphdef, optimizer, schedule, accum, state, batch, skip_nonfinite=skip_nonfinite,
                               loss_fn=loss_fn, rng=rng)


def lora_eval_step(graphdef, spec: LoraSpec, adapters, base, batch) -> dict:
    """Summed loss, correct tokens and token count of one batch on the adapted model (no dropout)."""
    _, sums = lora_loss_terms(graphdef, adapters, batch, base=base, spec=spec)
    return sums


def jit_train_step(lay, base_shardings, optimizer, schedule, accum: int, spec: LoraSpec, seed: int, mesh,
                   skip_nonfinite: bool = False):
    """The sharded jitted LoRA step `(state, base, batch) -> (state, metrics)`; only the
    state (adapters, their optimizer state, step) is donated."""
    fn = functools.partial(lora_train_step, lay.graphdef, optimizer, schedule, accum, spec, seed,
                           skip_nonfinite=skip_nonfinite)
    return jax.jit(fn, in_shardings=(lay.state_shardings, base_shardings, parallel.batch_sharding(mesh)),
                   out_shardings=(lay.state_shardings, parallel.replicated(mesh)), donate_argnums=0)


def jit_eval_step(lay, base_shardings, spec: LoraSpec, mesh):
    """The jitted LoRA eval step `(adapters, base, batch) -> sums`."""
    fn = functools.partial(lora_eval_step, lay.graphdef, spec)
    return jax.jit(fn, in_shardings=(lay.params_shardings, base_shardings, parallel.batch_sharding(mesh)))
