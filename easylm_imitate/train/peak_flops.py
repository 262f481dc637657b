"""Peak FLOP/s per device, the denominator of MFU.

Accelerators take theirs from a datasheet table. A CPU (or an accelerator the table does not
know) has no useful datasheet figure: its peak is measured once per machine with a matmul in
the run's compute dtype and cached in `peak_flops.json` under the cache directory
(`$EASYLM_IMITATE_CACHE_DIR`, else `$XDG_CACHE_HOME/easylm_imitate`, else
`~/.cache/easylm_imitate`), keyed by processor model, core count, JAX version and dtype. A
measurement is noisy (a busy machine measures low), so the cached figure only ever goes up:
when a run's measured FLOP/s exceed it, the peak was too low and is raised to what was seen
(`Peak.raise_to`), which also keeps MFU at or below 100% by construction.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time

import jax

from easylm_imitate.fileio import write_json_atomic

# Dense bf16 peak FLOP/s per device (datasheets).
PEAK_FLOPS = {
    "TPU v2": 45e12 / 2, "TPU v3": 123e12 / 2, "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
    "TPU v5p": 459e12, "TPU v5": 459e12, "TPU v6 lite": 918e12, "TPU v6e": 918e12,
    "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12, "NVIDIA L4": 121e12,
    "NVIDIA A10G": 125e12, "NVIDIA B200": 2250e12,
}
CACHE_FILE = "peak_flops.json"


def cache_dir() -> str:
    """Directory of easylm_imitate's per-machine cache files."""
    if os.environ.get("EASYLM_IMITATE_CACHE_DIR"):
        return os.environ["EASYLM_IMITATE_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "easylm_imitate")


def processor_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_key(dtype: str) -> str:
    """What a measured peak depends on: device kind (processor model on CPU), cores, JAX, dtype."""
    kind = jax.devices()[0].device_kind
    what = processor_model() if jax.default_backend() == "cpu" else kind
    return f"{what} | {usable_cores()} cores | jax {jax.__version__} | {dtype}"


def measured_matmul_peak(dtype: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a `size`x`size` matmul in `dtype` on the default device (best of `repeats`)."""
    a = jax.numpy.ones((size, size), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best


class PeakCache:
    """The measured peaks of this machine: {machine key: {"flops", "updated", "how"}} in one JSON file."""

    def __init__(self, path: str | None = None):
        self.path = path or os.path.join(cache_dir(), CACHE_FILE)

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):  # missing or unreadable: measure afresh
            return {}

    def get(self, key: str) -> float | None:
        """The cached FLOP/s for `key`, or None."""
        entry = self._read().get(key)
        flops = entry.get("flops") if isinstance(entry, dict) else None
        return float(flops) if isinstance(flops, (int, float)) and flops > 0 else None

    def put(self, key: str, flops: float, how: str) -> float:
        """Store `flops` for `key` unless the file already holds more (two runs may race);
        returns the value now cached."""
        data = self._read()
        old = self.get(key) or 0.0
        if flops > old:
            data[key] = {"flops": flops, "how": how, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            write_json_atomic(self.path, data)
        return max(flops, old)


@dataclasses.dataclass
class Peak:
    """Peak FLOP/s of one device and where the figure came from. `cache`/`key` are set when the
    figure is a measured one, so raising it also raises the cached machine figure; `share` is
    the number of devices that split the measured machine (CPU devices share its cores)."""

    flops: float
    source: str
    cache: PeakCache | None = None
    key: str = ""
    share: int = 1

    def raise_to(self, flops: float) -> str:
        """Raise the peak to `flops` per device (a run measured more than the peak allows)
        and say so; a measured peak is raised in the cache too."""
        old = self.flops
        self.flops = flops
        if self.cache is not None:
            self.cache.put(self.key, flops * self.share, "raised to the throughput of a training run")
            where = f"cached peak raised in {self.cache.path}"
        else:
            where = f"the {self.source} figure is too low; peak raised for this run"
        return (f"peak raised: measured {flops / 1e12:.4g} TFLOP/s per device exceeds the peak "
                f"{old / 1e12:.4g} ({where})")


def peak_flops_per_device(override: float = 0.0, dtype: str = "float32", cache: PeakCache | None = None) -> Peak:
    """The peak FLOP/s of one device: `override` when > 0, else the datasheet table, else the
    machine's measured matmul peak (measured once, then read from `cache`) split over its local
    devices."""
    if override > 0:
        return Peak(override, "config.peak_flops_per_device")
    kind = jax.devices()[0].device_kind
    for name, flops in PEAK_FLOPS.items():
        if kind.startswith(name):
            return Peak(flops, f"datasheet ({kind})")
    cache = cache or PeakCache()
    key = machine_key(dtype)
    share = jax.local_device_count() if jax.default_backend() == "cpu" else 1
    machine = cache.get(key)
    how = f"read from {cache.path}"
    if machine is None:
        machine = cache.put(key, measured_matmul_peak(dtype), "measured matmul")
        how = f"measured now, cached in {cache.path}"
    shared = f" / {share} devices" if share > 1 else ""
    return Peak(machine / share, f"{dtype} matmul peak of {key}{shared}, {how}", cache, key, share)
