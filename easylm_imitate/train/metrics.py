"""Throughput, MFU and the run's metrics sinks (WORKDIR/metrics.jsonl, TensorBoard)."""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from easylm_imitate.fileio import LineError, iter_jsonl, write_jsonl_atomic

# Dense bf16 peak FLOP/s per device (datasheets). CPU has no useful datasheet figure: it is
# measured at start-up with a float32 matmul instead (see `measured_matmul_peak`).
PEAK_FLOPS = {
    "TPU v2": 45e12 / 2, "TPU v3": 123e12 / 2, "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
    "TPU v5p": 459e12, "TPU v5": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12, "NVIDIA L4": 121e12,
    "NVIDIA A10G": 125e12, "NVIDIA B200": 2250e12,
}


def measured_matmul_peak(size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a float32 matmul on the default device (best of `repeats`)."""
    a = jax.numpy.ones((size, size), jax.numpy.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best


def peak_flops_per_device(override: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number came from)."""
    if override > 0:
        return override, "config.peak_flops_per_device"
    kind = jax.devices()[0].device_kind
    for name, flops in PEAK_FLOPS.items():
        if kind.startswith(name):
            return flops, f"datasheet ({kind})"
    return measured_matmul_peak(), f"measured float32 matmul ({kind})"


class Throughput:
    """Tokens/s, TFLOP/s per device and MFU over the steps since the last report."""

    def __init__(self, flops_per_token: float, tokens_per_step: int, peak: float, num_devices: int):
        self.flops_per_token, self.tokens_per_step = flops_per_token, tokens_per_step
        self.peak, self.num_devices = peak, num_devices
        self._t, self._steps = time.perf_counter(), 0

    def step(self) -> None:
        """Count one finished step."""
        self._steps += 1

    def report(self) -> dict:
        """Rates since the previous report (then reset)."""
        now = time.perf_counter()
        elapsed = max(now - self._t, 1e-9)
        tokens_per_s = self._steps * self.tokens_per_step / elapsed
        flops_per_device = tokens_per_s * self.flops_per_token / self.num_devices
        self._t, self._steps = now, 0
        return {"tokens_per_s": tokens_per_s, "tflops_per_device": flops_per_device / 1e12,
                "mfu": flops_per_device / self.peak}

    def reset(self) -> None:
        """Start a new measuring window (e.g. after compilation or a checkpoint)."""
        self._t, self._steps = time.perf_counter(), 0


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
