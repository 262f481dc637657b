"""One trainer per run directory: a second one exits at once naming the holder; the lock of
a killed trainer is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from support.train_helpers import REPO, env_with_devices, train_cmd


def test_two_trainers_on_one_workdir_the_second_exits_naming_the_holder(tmp_path):
    from easylm_imitate.train import run_checkpoint

    workdir = tmp_path / "run"
    args = ("--config.total_steps=30", "--config.save_every_steps=10", "--config.eval_every_steps=0")
    logs = [(open(tmp_path / f"out{i}", "w+"), open(tmp_path / f"err{i}", "w+")) for i in range(2)]
    procs = [subprocess.Popen(train_cmd(str(workdir), *args), env=env_with_devices(1), cwd=REPO,
                              stdout=out, stderr=err, text=True) for out, err in logs]
    ended: dict[int, float] = {}
    deadline = time.time() + 400
    while len(ended) < 2 and time.time() < deadline:
        for i, p in enumerate(procs):
            if i not in ended and p.poll() is not None:
                ended[i] = time.time()
        time.sleep(0.05)
    for p in procs:
        p.wait(timeout=60)
    outs = [((tmp_path / f"out{i}").read_text(), (tmp_path / f"err{i}").read_text()) for i in range(2)]
    for out, err in logs:
        out.close(), err.close()
    codes = [p.returncode for p in procs]
    assert sorted(c == 0 for c in codes) == [False, True], (codes, [o[1][-2000:] for o in outs])
    loser = codes.index(next(c for c in codes if c != 0))
    winner = 1 - loser
    last = outs[loser][1].strip().splitlines()[-1]
    assert "in use by another trainer" in last and f"pid {procs[winner].pid}" in last, last
    assert ended[loser] < ended[winner], "the second trainer should stop at once, not after the first"
    assert "resuming" not in outs[winner][0]
    assert run_checkpoint.read_run_meta(str(workdir))[0] == 30


def test_lock_of_a_killed_trainer_is_taken_over(tmp_path):
    from easylm_imitate.train.run_lock import RunLock, RunLockError

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from easylm_imitate.train.run_lock import RunLock\n"
         f"RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(600)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockError, match=f"pid {holder.pid} on host"):
            RunLock(str(tmp_path)).acquire()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with RunLock(str(tmp_path)):
        pass


def test_processes_of_one_run_take_separate_locks(tmp_path):
    from easylm_imitate.train.run_lock import RunLock, RunLockError

    with RunLock(str(tmp_path), 0), RunLock(str(tmp_path), 1):
        with pytest.raises(RunLockError):
            RunLock(str(tmp_path), 1).acquire()
