"""Shared helpers for trainer tests: smoke configs, subprocess runs, reading final params."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np

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

    step, _ = run_checkpoint.read_run_meta(workdir)
    with run_checkpoint.manager(workdir, read_only=True) as mgr:
        import orbax.checkpoint as ocp

        meta = mgr.item_metadata(step)["params"]
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), meta)
    restored = run_checkpoint.restore_params_only(workdir, step, target)
    flat = jax.tree_util.tree_flatten_with_path(restored)[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}
