"""Preemption of a multi-host run: a SIGTERM that reaches one host stops every host after the
same step, with a complete checkpoint and a metrics log that a rerun continues exactly."""

from __future__ import annotations

import io
import signal

from support.train_helpers import (SMOKE, assert_metrics_like_reference, assert_same_final_params,
                                   checkpoint_steps, wait_until)

STEPS = ["--config.total_steps=40", "--config.log_every_steps=1", "--config.save_every_steps=4",
         "--config.eval_every_steps=10", "--config.tensorboard=False"]


def _launch(workdir, out):
    from easylm_imitate.train.rehearse import launch

    return launch([f"--config={SMOKE}", f"--workdir={workdir}", *STEPS], num_processes=2, devices_per_process=4,
                  timeout=600, sink=out)


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_and_the_rerun_matches(tmp_path):
    from easylm_imitate.train import rehearse, run_checkpoint

    reference, run = tmp_path / "reference", tmp_path / "run"
    out = io.StringIO()
    assert _launch(reference, out) == [0, 0], out.getvalue()[-4000:]

    out = io.StringIO()
    procs = rehearse.start([f"--config={SMOKE}", f"--workdir={run}", *STEPS], num_processes=2,
                           devices_per_process=4, sink=out)
    try:
        wait_until(lambda: any(s >= 8 for s in checkpoint_steps(run)), procs, what="the checkpoint of step 8")
        procs[1].send_signal(signal.SIGTERM)  # host 1 only, as when one VM of a pod is preempted
    finally:
        codes = rehearse.wait(procs, timeout=90)  # today's hang: both still running after 90 s, killed
    assert codes == [143, 143], out.getvalue()[-4000:]

    saved, _ = run_checkpoint.read_run_meta(str(run))
    assert 8 <= saved < 40
    lines = out.getvalue().splitlines()  # the progress bar may share a line with the message
    for host in (0, 1):
        assert any(line.startswith(f"[host {host}]") and f"saving step {saved} and stopping" in line
                   for line in lines), f"host {host} did not stop at step {saved}"

    out = io.StringIO()
    assert _launch(run, out) == [0, 0], out.getvalue()[-4000:]
    assert f"resuming from step {saved}" in out.getvalue()
    assert_same_final_params(run, reference)
    assert_metrics_like_reference(run, reference)
