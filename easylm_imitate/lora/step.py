"""The LoRA train and eval steps: the ordinary loss on `base + scale * A @ B`, differentiated
with respect to the adapters only.

The train state's `params` are the adapters; the frozen (possibly quantised) base is a
separate, non-donated argument of the jitted step, so it gets no gradient and no optimizer
state. The effective weights are formed in the compute dtype inside the step, where the
forward pass casts the stacked weights anyway, so no extra float32 copy of the base is
made. Gradient accumulation, both optimizers, the remat policies and the non-finite guard
are the ordinary step's (`train.step.train_step` with `loss_fn`).
"""

from __future__ import annotations

import functools

import jax

from easylm_imitate import parallel
from easylm_imitate.lora.adapters import LoraSpec, effective_params
from easylm_imitate.models import layers
from easylm_imitate.train import step as step_lib


def lora_loss_terms(graphdef, adapters, batch, *, base, spec: LoraSpec, dtype_name: str):
    """`step.loss_terms` of the model on the effective parameters."""
    params = effective_params(base, adapters, spec, layers.compute_dtype(dtype_name))
    return step_lib.loss_terms(graphdef, params, batch)


def lora_train_step(graphdef, optimizer, schedule, accum: int, spec: LoraSpec, dtype_name: str, state, base, batch,
                    skip_nonfinite: bool = False):
    """One optimizer update of the adapters in `state.params` over the frozen `base`."""
    loss_fn = functools.partial(lora_loss_terms, base=base, spec=spec, dtype_name=dtype_name)
    return step_lib.train_step(graphdef, optimizer, schedule, accum, state, batch, skip_nonfinite=skip_nonfinite,
                               loss_fn=loss_fn)


def lora_eval_step(graphdef, spec: LoraSpec, dtype_name: str, adapters, base, batch) -> dict:
    """Summed loss, correct tokens and token count of one batch on the adapted model."""
    _, sums = lora_loss_terms(graphdef, adapters, batch, base=base, spec=spec, dtype_name=dtype_name)
    return sums


def jit_train_step(lay, base_shardings, optimizer, schedule, accum: int, spec: LoraSpec, dtype_name: str, mesh,
                   skip_nonfinite: bool = False):
    """The sharded jitted LoRA step `(state, base, batch) -> (state, metrics)`; only the
    state (adapters, their optimizer state, step) is donated."""
    fn = functools.partial(lora_train_step, lay.graphdef, optimizer, schedule, accum, spec, dtype_name,
                           skip_nonfinite=skip_nonfinite)
    return jax.jit(fn, in_shardings=(lay.state_shardings, base_shardings, parallel.batch_sharding(mesh)),
                   out_shardings=(lay.state_shardings, parallel.replicated(mesh)), donate_argnums=0)


def jit_eval_step(lay, base_shardings, spec: LoraSpec, dtype_name: str, mesh):
    """The jitted LoRA eval step `(adapters, base, batch) -> sums`."""
    fn = functools.partial(lora_eval_step, lay.graphdef, spec, dtype_name)
    return jax.jit(fn, in_shardings=(lay.params_shardings, base_shardings, parallel.batch_sharding(mesh)))
