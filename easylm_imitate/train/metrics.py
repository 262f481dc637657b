"""Throughput, MFU and the run's metrics sinks (WORKDIR/metrics.jsonl, TensorBoard)."""

from __future__ import annotations

import contextlib
import json
import os
import time

import jax
import numpy as np

from easylm_imitate.fileio import LineError, iter_jsonl, write_jsonl_atomic

TIMING_KEYS = ("tokens_per_s", "loss_tokens_per_s", "tflops_per_device", "mfu")  # wall-clock rates


class Throughput:
    """Tokens/s, TFLOP/s per device and MFU over the steps since the last report.

    Tokens are counted on the host from each step's batch: `tokens_per_s` over real (non-pad)
    tokens, `loss_tokens_per_s` over the tokens that carry loss. TFLOP/s and MFU are model
    FLOPs of the real tokens; the FLOPs of every row slot (padding is computed too) bound what
    the hardware did, so when they exceed `peak` the peak was too low and is raised
    (`Peak.raise_to`, reported through `log`): MFU never exceeds 1. Time spent while
    `paused()` (evaluation, checkpoint saves) is not counted.
    """

    def __init__(self, flops_per_token: float, peak, num_devices: int, log=print):
        self.flops_per_token, self.peak, self.num_devices, self._log = flops_per_token, peak, num_devices, log
        self.reset()

    def reset(self) -> None:
        """Start a new measuring window (e.g. after compilation)."""
        self._since, self._elapsed = time.perf_counter(), 0.0
        self._tokens = self._loss_tokens = self._slots = 0

    def step(self, tokens: int, loss_tokens: float, slots: int) -> None:
        """Count one finished step of `tokens` real tokens, `loss_tokens` loss-bearing ones, in
        `slots` row slots."""
        self._tokens += tokens
        self._loss_tokens += loss_tokens
        self._slots += slots

    @contextlib.contextmanager
    def paused(self):
        """Leave the time spent inside the block out of the window (block on the device first,
        or the block absorbs the tail of the steps still running)."""
        now = time.perf_counter()
        self._elapsed += now - self._since
        try:
            yield
        finally:
            self._since = time.perf_counter()

    def report(self) -> dict:
        """Rates since the previous report (then a new window starts)."""
        elapsed = max(self._elapsed + time.perf_counter() - self._since, 1e-9)
        per_device = self.flops_per_token / self.num_devices / elapsed
        flops, slot_flops = self._tokens * per_device, self._slots * per_device
        if slot_flops > self.peak.flops:
            self._log(self.peak.raise_to(slot_flops))
        out = {"tokens_per_s": self._tokens / elapsed, "loss_tokens_per_s": self._loss_tokens / elapsed,
               "tflops_per_device": flops / 1e12, "mfu": flops / self.peak.flops}
        self.reset()
        return out


def batch_token_counts(batch: dict, processes: int = 1) -> tuple[int, float, int]:
    """(real tokens, loss-bearing tokens, row slots) of a host batch of numpy arrays (no device
    sync), times `processes` (each process holds an equally shaped slice of the global batch)."""
    real = int(np.count_nonzero(batch["segment_ids"]))
    return real * processes, float(np.sum(batch["weights"])) * processes, int(batch["inputs"].size) * processes


METRICS_FILE = "metrics.jsonl"


def record_key(record: dict) -> tuple[int, str]:
    """(step, kind) of a metrics record: what identifies it in metrics.jsonl. `kind` is
    `train` or `eval`; records written before `kind` existed get it from their fields."""
    kind = record.get("kind") or ("eval" if any(k.startswith("eval_") for k in record) else "train")
    return int(record["step"]), kind


def records_through(path: str, step: int, warn=print) -> list[dict]:
    """The records of the metrics file `path` logged at or before `step`, in file order. A line
    that is not a whole record (a run killed while writing it) is dropped with a warning."""
    if not os.path.exists(path):
        return []
    kept = []
    for number, record in iter_jsonl(path):
        if isinstance(record, LineError) or not isinstance(record, dict) or not isinstance(record.get("step"), int):
            warn(f"{path}:{number}: not a metrics record, dropped")
        elif record["step"] <= step:
            kept.append(record)
    return kept


class Logger:
    """A run's metrics: appended to WORKDIR/metrics.jsonl as they are logged (one flushed line
    per record) and to TensorBoard, by process 0 only; `history` holds this run's records.

    A run that resumes from the checkpoint of step `start` first cuts metrics.jsonl back to the
    records of steps <= `start` (what the interrupted run logged after its checkpoint is redone),
    and a record logged again replaces the old one, so each (step, kind) appears once, with the
    value of the run that counts. A run starting at step 0 starts the file afresh.
    """

    def __init__(self, workdir: str, enabled: bool = True, start: int = 0, warn=print):
        self.history: list[dict] = []
        self._writer = self._file = None
        self._path = os.path.join(workdir, METRICS_FILE)
        if jax.process_index() != 0:
            return
        self._rewrite(records_through(self._path, start, warn) if start > 0 else [])
        if enabled:
            from tensorboardX import SummaryWriter

            # TensorBoard hides what earlier event files hold for the steps this run redoes.
            self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start + 1 if start else 0)

    def _rewrite(self, records: list[dict]) -> None:
        """Replace the metrics file by `records` atomically and reopen it for appending."""
        if self._file is not None:
            self._file.close()
        write_jsonl_atomic(self._path, records)
        self._records = {record_key(r): r for r in records}
        self._file = open(self._path, "a", encoding="utf-8")

    def logged(self, step: int, kind: str) -> bool:
        """Whether metrics.jsonl already holds the (step, kind) record; process 0's answer on
        every process (a collective: call it on all of them)."""
        from jax.experimental import multihost_utils

        held = self._file is not None and (step, kind) in self._records
        return bool(multihost_utils.broadcast_one_to_all(np.asarray(held)))

    def write(self, step: int, scalars: dict, kind: str = "train") -> None:
        """Record scalars of `kind` (`train` or `eval`) for `step`."""
        record = {"step": step, "kind": kind, **{k: float(np.asarray(v)) for k, v in scalars.items()}}
        self.history.append(record)
        if self._file is not None:
            key = record_key(record)
            if key in self._records:  # logged before (e.g. the final eval of a finished run, rerun)
                self._rewrite([r for k, r in self._records.items() if k != key])
            self._records[key] = record
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._writer is not None:
            for k, v in record.items():
                if k not in ("step", "kind"):
                    self._writer.add_scalar(k, v, step)

    def close(self) -> None:
        """Close the metrics file and flush and close the event file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
