"""Shared helpers for trainer tests: smoke configs, subprocess runs, reading final params and metrics."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from easylm_imitate.train.metrics import TIMING_KEYS as TIMING_FIELDS  # wall-clock rates: differ between runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/support/..
SMOKE = os.path.join(REPO, "configs", "smoke.py")


def smoke_config(**overrides):
    """configs/smoke.py with top-level or dotted overrides (e.g. {'optimizer.warmup_steps': 0})."""
    from ml_collections import config_flags  # noqa: F401  (same loader the binary uses)
    import importlib.util

    spec = importlib.util.spec_from_file_location("smoke_cfg", SMOKE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config()
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    cfg.tensorboard = False
    return cfg


def train_cmd(workdir: str, *overrides: str) -> list[str]:
    """The training binary's command line for the smoke config."""
    return [sys.executable, "-m", "easylm_imitate.train", f"--config={SMOKE}", f"--workdir={workdir}",
            "--config.tensorboard=False", *overrides]


def env_with_devices(n: int) -> dict:
    """Environment for a subprocess with `n` fake CPU devices."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def run_train(workdir: str, *overrides: str, devices: int = 8, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the training binary to completion; raises with its output on failure."""
    proc = subprocess.run(train_cmd(workdir, *overrides), env=env_with_devices(devices), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


def final_params(workdir: str) -> dict[str, np.ndarray]:
    """Flat {path: array} of the latest checkpoint's parameters of a run."""
    from easylm_imitate.train import run_checkpoint

    import orbax.checkpoint as ocp

    step, _ = run_checkpoint.read_run_meta(workdir)
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.metadata(os.path.join(run_checkpoint.checkpoint_dir(workdir), str(step), "params")).item_metadata.tree
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # whatever devices and hosts the run had
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    restored = run_checkpoint.restore_params_only(workdir, step, target)
    flat = jax.tree_util.tree_flatten_with_path(restored)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}


def read_metrics(workdir) -> list[dict]:
    """The records of a run's metrics.jsonl, in file order."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def checkpoint_steps(workdir) -> list[int]:
    """The finished checkpoint steps of a run (Orbax renames a step directory into place when done)."""
    ckpts = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(ckpts) if d.isdigit()) if os.path.isdir(ckpts) else []


def wait_until(condition, procs, timeout: float = 240, what: str = "condition"):
    """Poll `condition()` until it returns a true value (returned); fails if a process of
    `procs` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for proc in procs:
            assert proc.poll() is None, f"training exited ({proc.returncode}) before {what}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill_9_after_a_checkpoint(workdir, overrides, steps_to_kill_after, devices: int = 8) -> None:
    """Start training in `workdir`, SIGKILL it once a checkpoint of at least one of
    `steps_to_kill_after` (chosen at random) is complete, and wait for it to die."""
    proc = subprocess.Popen(train_cmd(str(workdir), *overrides), env=env_with_devices(devices), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_after = random.Random().choice(list(steps_to_kill_after))
    wait_until(lambda: (checkpoint_steps(str(workdir)) or [-1])[-1] >= kill_after, [proc],
               what=f"a checkpoint at step >= {kill_after}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def assert_metrics_like_reference(workdir, reference) -> None:
    """metrics.jsonl of `workdir` holds each (step, kind) of the uninterrupted `reference` run
    exactly once, with the same values (timing rates aside)."""
    got, want = read_metrics(workdir), read_metrics(reference)
    keys = [(r["step"], r["kind"]) for r in got]
    assert len(keys) == len(set(keys)), f"records logged twice: {sorted(k for k in keys if keys.count(k) > 1)}"
    assert sorted(keys) == sorted((r["step"], r["kind"]) for r in want)

    def values(r):
        return {k: v for k, v in r.items() if k not in TIMING_FIELDS}

    expected = {(r["step"], r["kind"]): values(r) for r in want}
    for r in got:
        assert values(r) == expected[(r["step"], r["kind"])], f"step {r['step']} {r['kind']} differs"


def assert_same_final_params(workdir, reference) -> None:
    """The latest checkpoints of the two runs hold bitwise equal parameters."""
    a, b = final_params(str(reference)), final_params(str(workdir))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs from the uninterrupted run"
