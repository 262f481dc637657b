"""Honest throughput: rates over real and loss-bearing tokens, evaluation and saves left out of
the step-time window, a CPU peak measured once per machine, and MFU never above 100%."""

from __future__ import annotations

import json
import time

import jax
import numpy as np
import pytest

from easylm_imitate.train.metrics import Throughput, batch_token_counts
from easylm_imitate.train.peak_flops import Peak, PeakCache, machine_key, peak_flops_per_device


def padded_batch() -> dict:
    """Two rows of 8 slots: 5 and 3 real tokens (the rest padding), 2 and 1 carrying loss."""
    segment_ids = np.array([[1, 1, 1, 2, 2, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]], np.int32)
    weights = np.zeros((2, 8), np.float32)
    weights[0, 1:3] = weights[1, 2] = 1.0
    return {"inputs": np.zeros((2, 8), np.int32), "segment_ids": segment_ids, "weights": weights}


def test_tokens_are_counted_without_padding_and_per_process():
    assert batch_token_counts(padded_batch()) == (8, 3.0, 16)
    assert batch_token_counts(padded_batch(), processes=4) == (32, 12.0, 64)


def test_rates_are_over_real_and_loss_tokens_and_time_paused_is_left_out():
    throughput = Throughput(flops_per_token=1.0, peak=Peak(1e30, "test"), num_devices=1)
    throughput.step(*batch_token_counts(padded_batch()))
    with throughput.paused():  # an evaluation or a checkpoint save
        time.sleep(1.0)
    rates = throughput.report()
    # 8 tokens in (almost) no time; had the second counted, the rate would be below 8/s
    assert rates["tokens_per_s"] > 80, rates
    assert rates["loss_tokens_per_s"] / rates["tokens_per_s"] == pytest.approx(3 / 8)
    time.sleep(0.2)
    throughput.step(8, 3.0, 16)
    assert throughput.report()["tokens_per_s"] < 8 / 0.2  # the window is timed outside a pause


def test_cpu_peak_is_measured_once_and_then_read_from_the_cache(tmp_path):
    cache = PeakCache(str(tmp_path / "peak_flops.json"))
    first = peak_flops_per_device(dtype="float32", cache=cache)
    assert "measured now" in first.source
    second = peak_flops_per_device(dtype="float32", cache=cache)
    assert second.flops == first.flops and f"read from {cache.path}" in second.source
    assert "measured now" not in second.source
    with open(cache.path, encoding="utf-8") as f:
        entries = json.load(f)
    key = machine_key("float32")
    assert list(entries) == [key] and jax.__version__ in key
    # 8 fake CPU devices share the machine's cores: each gets an eighth of the measured peak
    assert entries[key]["flops"] == first.flops * jax.local_device_count()
    assert peak_flops_per_device(override=5e12, cache=cache).flops == 5e12


def test_mfu_never_exceeds_one_a_too_low_cached_peak_is_raised(tmp_path):
    cache = PeakCache(str(tmp_path / "peak_flops.json"))
    cache.put("cpu k", 8.0, "measured")
    peak = Peak(1.0, "measured", cache, "cpu k", share=8)  # per device: the machine's 8.0 over 8 devices
    logs = []
    throughput = Throughput(flops_per_token=1e6, peak=peak, num_devices=8, log=logs.append)
    throughput.step(tokens=8, loss_tokens=3.0, slots=16)
    rates = throughput.report()
    assert 0 < rates["mfu"] <= 1.0
    assert rates["mfu"] == pytest.approx(rates["tflops_per_device"] * 1e12 / peak.flops)
    assert peak.flops > 1.0 and cache.get("cpu k") == peak.flops * 8  # the machine figure, raised
    assert len(logs) == 1 and logs[0].startswith("peak raised:") and cache.path in logs[0]
    raised = peak.flops
    time.sleep(0.05)
    throughput.step(tokens=1, loss_tokens=1.0, slots=1)
    assert throughput.report()["mfu"] < 1.0 and peak.flops == raised and len(logs) == 1


def test_a_configured_peak_is_raised_for_the_run_only(tmp_path):
    logs = []
    peak = peak_flops_per_device(override=1.0)
    throughput = Throughput(flops_per_token=1e6, peak=peak, num_devices=1, log=logs.append)
    throughput.step(4, 4.0, 4)
    assert throughput.report()["mfu"] == 1.0
    assert "config.peak_flops_per_device figure is too low" in logs[0]
