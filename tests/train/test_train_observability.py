"""What a user watching a training run sees: token rates without padding, MFU within 100%
against a cached CPU peak, and evaluation with its size printed and a progress bar."""

from __future__ import annotations

import re
import subprocess

import pytest

from support.train_helpers import REPO, env_with_devices, read_metrics, smoke_config, train_cmd


def test_run_logs_token_rates_caps_mfu_and_shows_eval_size_and_progress(tmp_path):
    from easylm_imitate.train.metrics import TIMING_KEYS
    from easylm_imitate.train.peak_flops import PeakCache, machine_key

    cache = PeakCache(str(tmp_path / "cache" / "peak_flops.json"))
    key = machine_key("float32")
    cache.put(key, 1e3, "a figure far too low, as a noisy measurement on a busy machine gives")
    env = {**env_with_devices(8), "EASYLM_IMITATE_CACHE_DIR": str(tmp_path / "cache")}
    workdir = tmp_path / "run"
    proc = subprocess.run(train_cmd(str(workdir), "--config.total_steps=6", "--config.log_every_steps=2",
                                    "--config.eval_every_steps=3", "--config.save_every_steps=3",
                                    "--config.eval_max_rows=3"),
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]

    assert re.search(r"eval set: 3 rows \(first 3 of \d+: eval_max_rows\) of 128 tokens, \d+ tokens "
                     r"\(\d+ loss tokens\), 1 batches per eval", proc.stdout), proc.stdout
    for step in (0, 3, 6):
        assert re.search(rf"eval at step {step}: +\d+%.*\| *\d/3 ", proc.stderr), proc.stderr[-3000:]
    assert f"read from {cache.path}" in proc.stdout  # the cached peak, not a new measurement
    assert "peak raised:" in proc.stdout and cache.get(key) > 1e3

    timed = [r for r in read_metrics(workdir) if r["kind"] == "train" and "mfu" in r]
    assert [r["step"] for r in timed] == [2, 4, 6]
    for record in timed:
        assert set(TIMING_KEYS) <= record.keys()
        assert 0 < record["loss_tokens_per_s"] < record["tokens_per_s"]
        assert 0 < record["mfu"] <= 1.0, record


def test_a_negative_eval_max_rows_is_an_error_naming_the_key(tmp_path):
    from easylm_imitate.data.train_loader import DataError
    from easylm_imitate.train.trainer import train

    with pytest.raises(DataError, match=r"config.eval_max_rows: must be >= 0 \(0 = all rows\), got -1"):
        train(smoke_config(eval_max_rows=-1), str(tmp_path), log=lambda *_: None)
