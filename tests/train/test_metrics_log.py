"""WORKDIR/metrics.jsonl: written as each record is logged, and continued exactly by a resumed
run, also after `kill -9`."""

from __future__ import annotations

import json
import subprocess

from support.train_helpers import (REPO, assert_metrics_like_reference, checkpoint_steps, env_with_devices,
                                   read_metrics, run_train, train_cmd, wait_until)


def test_records_are_on_disk_when_logged_and_a_resume_keeps_only_what_its_checkpoint_covers(tmp_path):
    from easylm_imitate.train.metrics import Logger

    logger = Logger(str(tmp_path), enabled=False)
    for step in range(1, 6):
        logger.write(step, {"loss": 1.0 / step})
        assert read_metrics(tmp_path)[-1] == {"step": step, "kind": "train", "loss": 1.0 / step}
    logger.write(5, {"eval_loss": 0.5}, kind="eval")
    logger.close()
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 6, "kind": "tr')  # killed mid-write

    warnings = []
    logger = Logger(str(tmp_path), enabled=False, start=3, warn=warnings.append)  # resumed from step 3
    assert [(r["step"], r["kind"]) for r in read_metrics(tmp_path)] == [(1, "train"), (2, "train"), (3, "train")]
    assert len(warnings) == 1 and "metrics.jsonl:7" in warnings[0]
    logger.write(4, {"loss": 9.0})
    logger.write(3, {"eval_loss": 0.7}, kind="eval")
    logger.write(3, {"eval_loss": 0.6}, kind="eval")  # logged again: the later value counts
    logger.close()
    assert read_metrics(tmp_path)[-2:] == [{"step": 4, "kind": "train", "loss": 9.0},
                                          {"step": 3, "kind": "eval", "eval_loss": 0.6}]
    assert len(read_metrics(tmp_path)) == 5

    Logger(str(tmp_path), enabled=False, start=0).close()  # a run from scratch starts afresh
    assert read_metrics(tmp_path) == []


def test_kill_9_then_rerun_logs_every_step_once_with_the_uninterrupted_values(tmp_path):
    steps = ["--config.total_steps=40", "--config.log_every_steps=1", "--config.save_every_steps=4",
             "--config.eval_every_steps=10"]
    reference, run = tmp_path / "reference", tmp_path / "run"
    run_train(str(reference), *steps)

    proc = subprocess.Popen(train_cmd(str(run), *steps), env=env_with_devices(8), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def logged_past_a_checkpoint():
        saved = [s for s in checkpoint_steps(run) if s >= 8]
        try:
            logged = [json.loads(line)["step"] for line in open(run / "metrics.jsonl", encoding="utf-8")]
        except (OSError, ValueError):
            return False
        return bool(saved) and max(logged) >= max(saved) + 2  # steps the rerun will redo

    try:
        wait_until(logged_past_a_checkpoint, [proc], what="records logged after a checkpoint")
    finally:
        proc.kill()
        proc.wait()
    run_train(str(run), *steps)
    assert_metrics_like_reference(run, reference)


def test_rerunning_a_finished_run_keeps_its_final_eval_and_does_not_redo_it(tmp_path):
    steps = ("--config.total_steps=4", "--config.save_every_steps=2", "--config.eval_every_steps=0")
    first = run_train(str(tmp_path), *steps, devices=1)
    assert "step 4: eval loss" in first.stdout
    before = read_metrics(tmp_path)
    rerun = run_train(str(tmp_path), *steps, devices=1)
    assert "resuming from step 4" in rerun.stdout and "eval loss" not in rerun.stdout, rerun.stdout
    assert read_metrics(tmp_path) == before  # the eval the finished run logged stays, once
