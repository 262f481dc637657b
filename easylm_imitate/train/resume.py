"""Resuming a run from its newest checkpoint that restores and verifies.

A step is used only if every item restores, every leaf of `params` and `opt_state` is finite
and matches the checksum written at save, the `meta` step and the `data` position agree with
the step directory, and the training data has the fingerprint the step was trained on.
Newer steps that fail are moved to `WORKDIR/checkpoints.bad/<step>` (never deleted) with a
one-line warning each naming the cause. When no step is usable nothing is moved and the run
stops with a CheckpointError listing each step and its cause; when the training data differs
the run stops at once (an older step would not help).
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from easylm_imitate.checkpoint import CheckpointError
from easylm_imitate.train import integrity, run_checkpoint
from easylm_imitate.train.step import TrainState

BAD_DIR = "checkpoints.bad"


@dataclasses.dataclass
class Resumed:
    """A verified restored step."""

    step: int
    state: TrainState
    data_state: dict
    meta: dict


class DataMismatchError(CheckpointError):
    """The run's training data is not the data its checkpoints were trained on."""


def _restore_verified(mgr, step: int, lay, optimizer, data_fingerprint: str | None) -> Resumed:
    """Restore `step` and check it; IntegrityError (or the restore's own error) when unusable."""
    restored = run_checkpoint.restore(
        mgr, step, run_checkpoint.abstract_like(lay.params_shapes, lay.params_shardings),
        run_checkpoint.abstract_like(jax.eval_shape(optimizer.init, lay.params_shapes), lay.opt_shardings))
    meta, data_state = restored["meta"], restored["data"]
    saved_fp = meta.get("data_fingerprint")
    if data_fingerprint and saved_fp and saved_fp != data_fingerprint:
        raise DataMismatchError(
            f"{mgr.step_path(step)}: the training data differs from the data this run was trained on "
            f"(fingerprint {data_fingerprint}, checkpoint {saved_fp}: data.train_file, seq_length, template, "
            f"tokenizer or seed changed); resume with the original data or start a new --workdir")
    if meta.get("step") != step:
        raise integrity.IntegrityError(f"meta item says step {meta.get('step')!r}, the directory is step {step}")
    position = data_state.get("next_index") if isinstance(data_state, dict) else None
    if position != step:
        raise integrity.IntegrityError(f"data item: next_index {position!r} does not match step {step} "
                         f"(the run reads one batch per step)")
    integrity.verify_digests({"params": restored["params"], "opt_state": restored["opt_state"]},
                             meta.get("integrity"))
    step_arr = jax.device_put(np.asarray(step, np.int32), lay.state_shardings.step)
    return Resumed(step, TrainState(restored["params"], restored["opt_state"], step_arr), data_state, meta)


def _agree(reason: str | None) -> str | None:
    """Every process's verdict on a step, so all of them use or skip it together."""
    if jax.process_count() == 1:
        return reason
    from jax.experimental import multihost_utils

    failed = multihost_utils.process_allgather(np.int32(reason is not None))
    if reason is None and np.any(failed):
        return "unusable on another process"
    return reason


def _bad_dest(workdir: str, step: int) -> str:
    """Where an unusable step is moved: WORKDIR/checkpoints.bad/<step>[.n]."""
    bad = os.path.join(os.path.abspath(workdir), BAD_DIR)
    dest, n = os.path.join(bad, str(step)), 1
    while os.path.exists(dest):
        n += 1
        dest = os.path.join(bad, f"{step}.{n}")
    return dest


def _set_aside(workdir: str, step: int, reason: str, dest: str) -> None:
    """Move a step directory to `dest` with a REASON file (process 0 only)."""
    if jax.process_index() != 0:
        return
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.replace(os.path.join(run_checkpoint.checkpoint_dir(workdir), str(step)), dest)
    with open(os.path.join(dest, "REASON"), "w", encoding="utf-8") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {reason}\n")


def _sync(name: str) -> None:
    """Barrier across processes (no-op for one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def resume(mgr, workdir: str, lay, optimizer, data_fingerprint: str | None, log=print) -> Resumed | None:
    """The newest usable step of the run (None when it has no checkpoint); see module doc."""
    failures: list[tuple[int, str]] = []
    for step in sorted(mgr.all_steps(), reverse=True):
        resumed, reason = None, None
        try:
            resumed = _restore_verified(mgr, step, lay, optimizer, data_fingerprint)
        except DataMismatchError:
            raise
        except Exception as e:  # whatever makes a step unreadable makes it unusable
            reason = run_checkpoint.cause_of(e)
        reason = _agree(reason)
        if reason is not None:
            failures.append((step, reason))
            continue
        if failures:
            moves = [(bad_step, bad_reason, _bad_dest(workdir, bad_step)) for bad_step, bad_reason in failures]
            _sync("easylm_imitate_before_set_aside")  # every process names the same destinations
            for bad_step, bad_reason, dest in moves:
                _set_aside(workdir, bad_step, bad_reason, dest)
                log(f"warning: checkpoint step {bad_step} is unusable ({bad_reason}); moved it to {dest} "
                    f"and resuming from step {step}")
            _sync("easylm_imitate_set_aside")
            mgr.reload()
        mgr.mark_good(step)
        return resumed
    if failures:
        listed = "; ".join(f"step {s} ({mgr.step_path(s)}): {r}" for s, r in failures)
        raise CheckpointError(f"no usable checkpoint in {mgr.directory}: {listed}. Nothing was moved; "
                              f"fix or remove these step directories, or use a new --workdir")
    return None
