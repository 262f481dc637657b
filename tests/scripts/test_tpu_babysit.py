"""babysit.sh for real (no --dry-run) against a fake `gcloud` on PATH that answers from a
script of states: a preempted slice is deleted, re-created, set up and relaunched; a
finished run ends the loop; a slice that keeps failing makes it give up."""

import json
import os
import pathlib
import shlex
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]

FAKE_GCLOUD = """\
#!{python}
# Logs its argv; answers `describe` and `status.sh --state` from queues of lines.
import json, os, pathlib, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")

def pop(name):
    path = pathlib.Path(os.environ[name])
    lines = path.read_text().splitlines()
    if not lines:
        sys.exit("fake gcloud: queue %s is empty" % name)
    path.write_text("".join(line + "\\n" for line in lines[1:]))
    return lines[0]

if "describe" in args:
    state = pop("FAKE_STATES")
    if state == "MISSING":
        sys.exit("ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: pod7b")
    print(state)
elif "ssh" in args and "status.sh --state" in args[-1]:
    print(pop("FAKE_TRAINING"))
"""

ENV_FILE = """\
TPU_PROJECT=proj-1
TPU_ZONE=us-central2-b
TPU_NAME=pod7b
TPU_ACCELERATOR_TYPE=v4-32
TPU_RUNTIME_VERSION=tpu-ubuntu2204-base
TPU_PROVISIONING=spot
CODE_REPO=https://example.com/me/easylm_imitate.git
CODE_COMMIT=abc123
TRAIN_CONFIG=configs/llama_7b_imitation.py
TRAIN_WORKDIR=gs://bkt/runs/7b
"""


def babysit(tmp_path, states, training, *args):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable))
    gcloud.chmod(0o755)
    (tmp_path / "states").write_text("".join(s + "\n" for s in states))
    (tmp_path / "training").write_text("".join(s + "\n" for s in training))
    (tmp_path / "tpu.env").write_text(ENV_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "TRAIN_", "CODE_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_LOG=str(tmp_path / "calls"),
               FAKE_STATES=str(tmp_path / "states"), FAKE_TRAINING=str(tmp_path / "training"))
    result = subprocess.run(
        ["bash", str(REPO / "tpu_scripts/babysit.sh"), "--env", str(tmp_path / "tpu.env"),
         "--interval=0", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )
    calls = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
    return result, calls


def step(call):
    """A short name for one gcloud call: the verb, plus the remote script for ssh."""
    verb = " ".join(call[2:4])
    if call[3] == "ssh":
        remote = shlex.split(call[-1])
        script = [w for w in remote if w.startswith("tpu_scripts/remote/")]
        worker = [a for a in call if a.startswith("--worker=")][0]
        return f"ssh {worker} {script[0].split('/')[-1] if script else 'git' if 'git clone' in call[-1] else '?'}"
    return verb


def test_preempted_slice_is_recreated_and_relaunched_then_finishes(tmp_path):
    result, calls = babysit(tmp_path, ["PREEMPTED", "READY", "READY"], ["running", "exited:0"])
    assert result.returncode == 0, result.stderr
    assert [step(c) for c in calls] == [
        "tpu-vm describe",
        "tpu-vm delete", "tpu-vm create",
        "ssh --worker=all git", "ssh --worker=all install.sh", "ssh --worker=all start.sh",
        "tpu-vm describe", "ssh --worker=0 status.sh",
        "tpu-vm describe", "ssh --worker=0 status.sh",
    ]
    create = calls[2]
    assert "--spot" in create and "--accelerator-type=v4-32" in create
    assert "training finished" in result.stderr


def test_missing_slice_is_created_and_a_crashed_run_relaunched(tmp_path):
    result, calls = babysit(tmp_path, ["MISSING", "CREATING", "READY", "READY"],
                            ["exited:1", "exited:0"])
    assert result.returncode == 0, result.stderr
    steps = [step(c) for c in calls]
    assert steps[:6] == ["tpu-vm describe", "tpu-vm delete", "tpu-vm create",
                         "ssh --worker=all git", "ssh --worker=all install.sh",
                         "ssh --worker=all start.sh"]
    # CREATING: wait; READY with a crashed run: relaunch only (no new slice).
    assert steps[6:] == ["tpu-vm describe", "tpu-vm describe", "ssh --worker=0 status.sh",
                         "ssh --worker=all start.sh", "tpu-vm describe",
                         "ssh --worker=0 status.sh"]


def test_gives_up_after_max_restarts(tmp_path):
    result, calls = babysit(tmp_path, ["PREEMPTED"] * 3, [], "--max-restarts=2")
    assert result.returncode == 1
    assert "gave up after 2 restarts" in result.stderr
    assert [step(c) for c in calls].count("tpu-vm create") == 2
