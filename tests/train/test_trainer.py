"""The training binary as users run it: learning, resuming exactly, changing meshes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np

from support.train_helpers import (REPO, env_with_devices, final_params, kill_9_after_a_checkpoint, run_train,
                                   smoke_config, train_cmd)


def test_smoke_run_learns_and_writes_a_loadable_run(tmp_path):
    from easylm_imitate.train.trainer import train
    import easylm_imitate

    result = train(smoke_config(), str(tmp_path), log=lambda *_: None)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] <= 0.5 * losses[0], losses
    eval_losses = [h["eval_loss"] for h in result.history if "eval_loss" in h]
    assert eval_losses[-1] < eval_losses[0]
    for name in ("config.json", "run_info.json", "metrics.jsonl", "rejects.jsonl", "tokenizer"):
        assert os.path.exists(tmp_path / name), name
    model, tokenizer = easylm_imitate.load(str(tmp_path))
    ids = tokenizer("BEGINNING OF CONVERSATION: USER: What is 2 plus 3? GPT:", return_tensors="np").input_ids
    logits = model(ids)
    assert logits.shape == (1, ids.shape[1], 512) and str(logits.dtype) == "float32"
    params = final_params(str(tmp_path))
    from flax import nnx

    loaded = {k: v for k, v in nnx.to_flat_state(nnx.state(model))}
    assert np.array_equal(np.asarray(loaded[("blocks", "wq")].get_value()), params["['blocks']['wq']"])


def test_kill_9_then_rerun_gives_bitwise_identical_parameters(tmp_path):
    steps = ["--config.total_steps=30", "--config.save_every_steps=4", "--config.eval_every_steps=0"]
    reference = tmp_path / "reference"
    run_train(str(reference), *steps)

    resumed = tmp_path / "resumed"
    kill_9_after_a_checkpoint(resumed, steps, [8, 12, 16, 20])
    run_train(str(resumed), *steps)

    a, b = final_params(str(reference)), final_params(str(resumed))
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), f"{k} differs after kill -9 and resume"


def test_run_saved_on_dp2_fsdp4_resumes_on_four_devices(tmp_path):
    run_train(str(tmp_path), "--config.total_steps=6", "--config.save_every_steps=3", "--config.mesh=dp:2,fsdp:4,tp:1",
              "--config.eval_every_steps=0")
    proc = run_train(str(tmp_path), "--config.total_steps=10", "--config.mesh=dp:1,fsdp:4,tp:1",
                     "--config.eval_every_steps=0", devices=4)
    assert "resuming from step 6" in proc.stdout
    from easylm_imitate.train import run_checkpoint

    assert run_checkpoint.read_run_meta(str(tmp_path))[0] == 10


def test_unknown_config_key_is_an_error(tmp_path):
    proc = subprocess.run(train_cmd(str(tmp_path), "--config.lerning_rate=1.0"), env=env_with_devices(1),
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "lerning_rate" in proc.stderr


def test_sigterm_saves_and_the_rerun_finishes(tmp_path):
    steps = ["--config.total_steps=400", "--config.save_every_steps=1000", "--config.eval_every_steps=0"]
    proc = subprocess.Popen(train_cmd(str(tmp_path), *steps), env=env_with_devices(8), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("mesh "):
            break
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out
    from easylm_imitate.train import run_checkpoint

    saved, _ = run_checkpoint.read_run_meta(str(tmp_path))
    assert 0 < saved < 400
    rerun = run_train(str(tmp_path), *steps)
    assert f"resuming from step {saved}" in rerun.stdout
