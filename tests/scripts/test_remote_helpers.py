"""tpu_scripts/remote/*.sh, the scripts launch/check/stop run on each worker, exercised
here on this machine with a stand-in trainer: detached start with a log, refusal to start
twice, status, and a stop that delivers SIGTERM (checkpoint on exit) and records the code."""

import os
import pathlib
import subprocess
import time

REMOTE = pathlib.Path(__file__).resolve().parents[2] / "tpu_scripts" / "remote"

# Stands in for `python -m easylm_imitate.train`: logs its args, saves on SIGTERM.
FAKE_TRAINER = """\
#!/usr/bin/env bash
trap 'echo "SIGTERM: saving checkpoint"; exit 143' TERM
echo "args: $*"
for _ in $(seq 1 {ticks}); do sleep 0.1; done
echo "training done"
"""


def helpers(tmp_path, ticks):
    trainer = tmp_path / "trainer"
    trainer.write_text(FAKE_TRAINER.format(ticks=ticks))
    trainer.chmod(0o755)
    env = dict(os.environ, EASYLM_PYTHON=str(trainer), EASYLM_LOG_DIR=str(tmp_path / "logs"),
               EASYLM_TPU_LOCKFILE=str(tmp_path / "libtpu_lockfile"))

    def sh(script, *args):
        return subprocess.run(["bash", str(REMOTE / script), *args], capture_output=True,
                              text=True, env=env, timeout=60)
    return sh


def wait_for_state(sh, want, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        state = sh("status.sh", "--state").stdout.strip()
        if state == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"state stayed {state!r}, wanted {want!r}")


def test_start_runs_detached_logs_and_records_exit_code(tmp_path):
    sh = helpers(tmp_path, ticks=5)
    assert sh("status.sh", "--state").stdout.strip() == "none"
    started = sh("start.sh", "--config=configs/x.py", "--workdir=gs://b/r")
    assert started.returncode == 0, started.stderr  # returns at once, run goes on
    wait_for_state(sh, "exited:0")
    log = (tmp_path / "logs" / "train.log").read_text()
    assert "args: -m easylm_imitate.train --config=configs/x.py --workdir=gs://b/r" in log
    assert "training done" in log
    shown = sh("status.sh", "--lines=1")
    assert "exited:0" in shown.stdout.splitlines()[0]
    assert shown.stdout.splitlines()[1] == "training done"


def test_refuses_a_second_run_and_stop_sends_sigterm(tmp_path):
    sh = helpers(tmp_path, ticks=600)
    assert sh("start.sh", "--config=a").returncode == 0
    wait_for_state(sh, "running")
    second = sh("start.sh", "--config=a")
    assert second.returncode != 0 and "already runs" in second.stderr
    (tmp_path / "libtpu_lockfile").write_text("")
    stopped = sh("stop.sh", "--timeout=20")
    assert stopped.returncode == 0 and "stopped training" in stopped.stdout
    assert sh("status.sh", "--state").stdout.strip() == "exited:143"
    assert "SIGTERM: saving checkpoint" in (tmp_path / "logs" / "train.log").read_text()
    assert not (tmp_path / "libtpu_lockfile").exists()
    # Stopped, a new run may start again.
    assert sh("start.sh", "--config=a").returncode == 0
    sh("stop.sh", "--timeout=20")


def test_stop_kills_a_trainer_that_ignores_sigterm(tmp_path):
    sh = helpers(tmp_path, ticks=600)
    (tmp_path / "trainer").write_text("#!/usr/bin/env bash\ntrap '' TERM\nsleep 60\n")
    assert sh("start.sh").returncode == 0
    wait_for_state(sh, "running")
    stopped = sh("stop.sh", "--timeout=1")
    assert "SIGKILL" in stopped.stdout
    assert sh("status.sh", "--state").stdout.strip() in {"stopped", "exited:137"}


def test_stop_with_nothing_running(tmp_path):
    sh = helpers(tmp_path, ticks=1)
    result = sh("stop.sh")
    assert result.returncode == 0 and "no training running" in result.stdout
