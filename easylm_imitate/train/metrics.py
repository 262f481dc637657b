"""Throughput, MFU and logging sinks (console, TensorBoard)."""

from __future__ import annotations

import os
import time

import jax
import numpy as np

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


class Logger:
    """Writes scalars to TensorBoard (process 0 only) and keeps the history in memory."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.history: list[dict] = []
        self._writer = None
        if enabled and jax.process_index() == 0:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict) -> None:
        """Record scalars for `step`."""
        scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
        self.history.append({"step": step, **scalars})
        if self._writer is not None:
            for k, v in scalars.items():
                self._writer.add_scalar(k, v, step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
