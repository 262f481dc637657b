"""LoRA and QLoRA runs of the training binary on a tiny LLaMA: only the adapters train, the
loss falls, kill -9 + rerun is bitwise, and a bad `targets` regex is a one-line error."""

from __future__ import annotations

import hashlib
import os
import subprocess

import jax
import numpy as np
import pytest
from flax import nnx

from easylm_imitate import checkpoint
from easylm_imitate.assets import asset_path
from easylm_imitate.models import build_model, get_preset
from support.train_helpers import (REPO, assert_same_final_params, env_with_devices, final_params,
                                   kill_9_after_a_checkpoint, read_metrics, run_train, train_cmd)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A converted tiny-llama checkpoint (random weights, seed 1) with the tiny tokenizer."""
    cfg = get_preset("tiny-llama")
    path = tmp_path_factory.mktemp("lora") / "base"
    return checkpoint.save_params(path, cfg, nnx.state(build_model(cfg, seed=1)).to_pure_dict(),
                                  tokenizer=asset_path("tiny_tokenizer"))


def lora_flags(base_path, *extra):
    return (f"--config.init_from={base_path}", "--config.lora.rank=4", "--config.learning_rate=1e-2",
            "--config.optimizer.warmup_steps=2", "--config.eval_every_steps=0", *extra)


def tree_hash(path) -> str:
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def train_losses(workdir) -> list[float]:
    return [r["loss"] for r in read_metrics(workdir) if r["kind"] == "train"]


def test_lora_run_trains_only_adapters_and_its_loss_falls(base, tmp_path):
    before = tree_hash(base)
    run = tmp_path / "run"
    run_train(str(run), *lora_flags(base, "--config.total_steps=16", "--config.save_every_steps=8"))
    saved = final_params(str(run))
    assert saved and all(k.endswith(("['lora_a']", "['lora_b']")) for k in saved), sorted(saved)
    assert tree_hash(base) == before  # the base checkpoint is untouched
    losses = train_losses(run)
    assert losses[-1] < losses[0] - 0.3, losses

    import easylm_imitate
    from easylm_imitate.lora.load import read_run

    merged, _ = easylm_imitate.load(str(run))
    frozen, _ = easylm_imitate.load(str(base))
    _, meta, _, spec, _, adapters = read_run(str(run))
    assert meta["lora"]["base"] == str(base) and meta["lora"]["base_fingerprint"]
    targets = {p.path for p in spec.targets}
    got, want = nnx.state(merged).to_pure_dict(), nnx.state(frozen).to_pure_dict()
    for path, w in jax.tree_util.tree_flatten_with_path(want)[0]:
        keys = tuple(k.key for k in path)
        m = got
        for k in keys:
            m = m[k]
        if keys not in targets:  # every parameter without an adapter is the base, bitwise
            assert np.array_equal(np.asarray(m), np.asarray(w)), keys
            continue
        a, b = (np.asarray(adapters[keys[0]][keys[1]][n]) for n in ("lora_a", "lora_b"))
        proj = next(p for p in spec.targets if p.path == keys)
        delta = np.asarray(proj.delta(a, b))
        assert np.abs(delta).max() > 0, keys  # B left zero: the adapter never trained
        np.testing.assert_allclose(np.asarray(m), np.asarray(w) + spec.scale * delta, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_qlora_run_lowers_the_loss(base, tmp_path, kind):
    run = tmp_path / kind
    proc = run_train(str(run), *lora_flags(base, "--config.total_steps=12", "--config.save_every_steps=12",
                                           f"--config.lora.base_dtype={kind}"), devices=2)
    assert f"stored as {kind}" in proc.stdout
    losses = train_losses(run)
    assert losses[-1] < losses[0] - 0.3, losses


def test_kill_9_then_rerun_is_bitwise_equal_to_an_uninterrupted_lora_run(base, tmp_path):
    # Adafactor, 2 micro-batches, full remat, an int8 base, adapter dropout (masks drawn from
    # the step), on a dp x fsdp x tp mesh.
    steps = lora_flags(base, "--config.total_steps=16", "--config.save_every_steps=4",
                       "--config.optimizer.name=adafactor_scaled", "--config.grad_accum_steps=2",
                       "--config.model.remat=full", "--config.lora.base_dtype=int8", "--config.lora.dropout=0.1",
                       "--config.mesh=dp:2,fsdp:2,tp:2")
    reference = tmp_path / "reference"
    run_train(str(reference), *steps)

    resumed = tmp_path / "resumed"
    kill_9_after_a_checkpoint(resumed, steps, [4, 8, 12])
    out = run_train(str(resumed), *steps)
    assert "resuming from step" in out.stdout
    assert_same_final_params(resumed, reference)


def test_targets_matching_nothing_is_a_one_line_error(base, tmp_path):
    proc = subprocess.run(train_cmd(str(tmp_path / "run"), *lora_flags(base, "--config.lora.targets=query|value")),
                          env=env_with_devices(1), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: lora.targets: 'query|value' matches no projection"), last
    assert "q, up, v" in last


def test_a_changed_base_is_refused_on_resume_and_on_load(tmp_path):
    cfg = get_preset("tiny-llama")
    tok = asset_path("tiny_tokenizer")
    base = tmp_path / "base"
    checkpoint.save_params(base, cfg, nnx.state(build_model(cfg, seed=1)).to_pure_dict(), tokenizer=tok)
    run = tmp_path / "run"
    run_train(str(run), *lora_flags(base, "--config.total_steps=2", "--config.save_every_steps=2"), devices=1)
    import shutil

    shutil.rmtree(base)  # the same path now holds another model
    checkpoint.save_params(base, cfg, nnx.state(build_model(cfg, seed=2)).to_pure_dict(), tokenizer=tok)
    proc = subprocess.run(train_cmd(str(run), *lora_flags(base, "--config.total_steps=4")), env=env_with_devices(1),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {base}: the base differs from the one this LoRA run was trained on"), last

    import easylm_imitate
    from easylm_imitate.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="has changed since the run"):
        easylm_imitate.load(str(run))
