"""Two local processes joined by jax.distributed train like one process with all devices."""

from __future__ import annotations

import io
import json

import numpy as np

from support.train_helpers import SMOKE, run_train


def _losses(workdir) -> list[float]:
    with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
        return [r["loss"] for r in map(json.loads, f) if "loss" in r]


def test_two_processes_of_four_devices_match_one_process_of_eight(tmp_path):
    from easylm_imitate.train.rehearse import launch

    steps = ["--config.total_steps=12", "--config.log_every_steps=1", "--config.save_every_steps=6",
             "--config.eval_every_steps=0", "--config.tensorboard=False"]
    single = tmp_path / "single"
    run_train(str(single), *steps)
    multi = tmp_path / "multi"
    out = io.StringIO()
    codes = launch([f"--config={SMOKE}", f"--workdir={multi}", *steps], num_processes=2, devices_per_process=4,
                   timeout=600, sink=out)
    assert codes == [0, 0], out.getvalue()[-4000:]
    a, b = _losses(single), _losses(multi)
    assert len(a) == len(b) == 12
    np.testing.assert_allclose(a, b, rtol=2e-5)
    assert (multi / "checkpoints" / "12").is_dir()
