"""tpu_scripts/*.sh: the exact gcloud commands --dry-run prints for an env file, missing
settings failing fast by name, and --help on every script."""

import os
import pathlib
import shlex
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "tpu_scripts"
ALL = ["create", "setup", "launch", "check", "stop", "delete", "babysit"]

ENV_FILE = """\
# a comment, then settings as a user writes them
TPU_PROJECT=proj-1
TPU_ZONE=us-central2-b
export TPU_NAME="pod7b"
TPU_ACCELERATOR_TYPE=v4-32
TPU_RUNTIME_VERSION='tpu-ubuntu2204-base'
TPU_PROVISIONING=spot
TRAIN_CONFIG=configs/llama_7b_imitation.py
TRAIN_WORKDIR=gs://bkt/runs/7b
TRAIN_ARGS="--config.init_from=gs://bkt/ckpt/llama-7b --config.data.train_file=gs://bkt/data/train.jsonl"
"""

LOC = "--zone=us-central2-b --project=proj-1"
SSH_ALL = f"gcloud compute tpus tpu-vm ssh pod7b {LOC} --worker=all --command"
SYNC = [
    f"git -C {REPO} ls-files -z --cached --others --exclude-standard"
    f" | tar -czf /tmp/easylm_imitate_code_pod7b.tgz -C {REPO} --null -T -",
    "gcloud compute tpus tpu-vm scp /tmp/easylm_imitate_code_pod7b.tgz"
    f" pod7b:/tmp/easylm_imitate_code.tgz {LOC} --worker=all",
    f"{SSH_ALL} 'mkdir -p easylm_imitate && tar -xzf /tmp/easylm_imitate_code.tgz -C easylm_imitate'",
]
INSTALL = f"{SSH_ALL} 'cd easylm_imitate && bash tpu_scripts/remote/install.sh 3.11'"
START = (
    f"{SSH_ALL} 'cd easylm_imitate && bash tpu_scripts/remote/start.sh"
    " --config=configs/llama_7b_imitation.py --workdir=gs://bkt/runs/7b"
    " --config.init_from=gs://bkt/ckpt/llama-7b --config.data.train_file=gs://bkt/data/train.jsonl'"
)
CREATE = (
    f"gcloud compute tpus tpu-vm create pod7b {LOC}"
    " --accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot"
)
DELETE = f"gcloud compute tpus tpu-vm delete pod7b {LOC} --quiet"
DESCRIBE = f"gcloud compute tpus tpu-vm describe pod7b {LOC} --format='value(state)'"


def clean_env(**extra):
    """The test process's environment without any setting a script reads."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TPU_", "TRAIN_", "CODE_", "REMOTE_", "SETUP_"))
    }
    env.update(extra)
    return env


def run(script, *args, env_text=ENV_FILE, tmp_path=None, extra_env=None):
    env_file = tmp_path / "tpu.env"
    env_file.write_text(env_text)
    return subprocess.run(
        ["bash", str(SCRIPTS / f"{script}.sh"), "--env", str(env_file), *args],
        capture_output=True,
        text=True,
        env=clean_env(**(extra_env or {})),
        timeout=60,
    )


def commands(result):
    """The printed commands, comments dropped."""
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize(
    "script, expected",
    [
        ("create", [CREATE]),
        ("setup", SYNC + [INSTALL]),
        ("launch", SYNC + [START]),
        ("check", [DESCRIBE, f"{SSH_ALL} 'cd easylm_imitate && bash tpu_scripts/remote/status.sh --lines=20'"]),
        ("stop", [f"{SSH_ALL} 'cd easylm_imitate && bash tpu_scripts/remote/stop.sh --timeout=300'"]),
        ("delete", [DELETE]),
    ],
)
def test_dry_run_prints_the_exact_commands(script, expected, tmp_path):
    assert commands(run(script, "--dry-run", tmp_path=tmp_path)) == expected


def test_every_worker_acts_at_once(tmp_path):
    """Copying, installing, starting and stopping happen on all hosts of the pod."""
    for script in ["setup", "launch", "stop"]:
        for line in commands(run(script, "--dry-run", tmp_path=tmp_path)):
            if line.startswith("gcloud"):
                assert "--worker=all" in shlex.split(line), (script, line)


def test_printed_commands_are_valid_shell_with_the_right_words(tmp_path):
    """The --command argument reaches the workers as one word, training flags intact."""
    line = commands(run("launch", "--dry-run", "--no-sync", tmp_path=tmp_path))[0]
    words = shlex.split(line)
    assert words[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod7b"]
    remote = shlex.split(words[words.index("--command") + 1])
    assert remote[:6] == ["cd", "easylm_imitate", "&&", "bash", "tpu_scripts/remote/start.sh",
                          "--config=configs/llama_7b_imitation.py"]
    assert "--config.data.train_file=gs://bkt/data/train.jsonl" in remote


def test_queued_resource_create_waits_for_active_and_delete_forces(tmp_path):
    env = ENV_FILE + "TPU_QUEUED=true\nTPU_NETWORK=net-a\n"
    created = commands(run("create", "--dry-run", env_text=env, tmp_path=tmp_path))
    assert created == [
        f"gcloud compute tpus queued-resources create pod7b --node-id=pod7b {LOC}"
        " --accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base --spot --network=net-a",
        f"gcloud compute tpus queued-resources describe pod7b {LOC} --format='value(state.state)'",
    ]
    deleted = commands(run("delete", "--dry-run", env_text=env, tmp_path=tmp_path))
    assert deleted == [f"gcloud compute tpus queued-resources delete pod7b {LOC} --force --quiet"]


def test_v5e_on_demand_with_extra_flags(tmp_path):
    env = ENV_FILE.replace("v4-32", "v5litepod-16").replace(
        "tpu-ubuntu2204-base", "v2-alpha-tpuv5-lite").replace("spot", "on-demand")
    env += 'TPU_CREATE_FLAGS="--labels=team=imitation --internal-ips"\n'
    assert commands(run("create", "--dry-run", env_text=env, tmp_path=tmp_path)) == [
        f"gcloud compute tpus tpu-vm create pod7b {LOC} --accelerator-type=v5litepod-16"
        " --version=v2-alpha-tpuv5-lite --labels=team=imitation --internal-ips"
    ]


def test_git_checkout_at_a_commit_instead_of_copying(tmp_path):
    env = ENV_FILE + "CODE_REPO=https://example.com/me/easylm_imitate.git\nCODE_COMMIT=abc123\n"
    lines = commands(run("setup", "--dry-run", env_text=env, tmp_path=tmp_path))
    assert lines == [
        f"{SSH_ALL} 'if [ -d easylm_imitate/.git ]; then git -C easylm_imitate fetch --quiet origin;"
        " else git clone --quiet https://example.com/me/easylm_imitate.git easylm_imitate; fi"
        " && git -C easylm_imitate checkout --quiet --force abc123'",
        INSTALL,
    ]


def test_check_one_worker_follow_and_ssh_flags(tmp_path):
    env = ENV_FILE + "TPU_SSH_FLAGS=--internal-ip\n"
    lines = commands(run("check", "--dry-run", "--worker=2", "--lines=50", "--follow",
                         env_text=env, tmp_path=tmp_path))
    assert lines[1] == (
        f"gcloud compute tpus tpu-vm ssh pod7b {LOC} --worker=2 --internal-ip --command"
        " 'cd easylm_imitate && bash tpu_scripts/remote/status.sh --lines=50 --follow'"
    )


def test_babysit_dry_run_shows_poll_and_full_recovery(tmp_path):
    lines = commands(run("babysit", "--dry-run", tmp_path=tmp_path))
    assert lines == [
        DESCRIBE,
        f"gcloud compute tpus tpu-vm ssh pod7b {LOC} --worker=0 --command"
        " 'cd easylm_imitate && bash tpu_scripts/remote/status.sh --state'",
        START,
        DELETE, CREATE, *SYNC, INSTALL, START,
    ]


def test_environment_overrides_the_file(tmp_path):
    lines = commands(run("delete", "--dry-run", tmp_path=tmp_path, extra_env={"TPU_NAME": "other"}))
    assert lines == [f"gcloud compute tpus tpu-vm delete other {LOC} --quiet"]


@pytest.mark.parametrize(
    "script, dropped, named",
    [
        ("create", "TPU_ZONE", "TPU_ZONE"),
        ("create", "TPU_RUNTIME_VERSION", "TPU_RUNTIME_VERSION"),
        ("create", "TPU_ACCELERATOR_TYPE", "TPU_ACCELERATOR_TYPE"),
        ("setup", "TPU_PROJECT", "TPU_PROJECT"),
        ("launch", "TRAIN_WORKDIR", "TRAIN_WORKDIR"),
        ("launch", "TRAIN_CONFIG", "TRAIN_CONFIG"),
        ("check", "TPU_NAME", "TPU_NAME"),
        ("stop", "TPU_NAME", "TPU_NAME"),
        ("delete", "TPU_PROJECT", "TPU_PROJECT"),
        ("babysit", "TRAIN_WORKDIR", "TRAIN_WORKDIR"),
    ],
)
def test_missing_setting_fails_fast_naming_it(script, dropped, named, tmp_path):
    env = "\n".join(line for line in ENV_FILE.splitlines() if dropped not in line)
    result = run(script, "--dry-run", env_text=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""  # nothing was printed or run before the check
    assert named in result.stderr and "missing setting" in result.stderr


def test_no_env_file_at_all_names_every_missing_setting(tmp_path):
    if (SCRIPTS / "tpu.env").exists():  # a developer's own settings would be read
        pytest.fail("remove tpu_scripts/tpu.env to run this test")
    result = subprocess.run(["bash", str(SCRIPTS / "create.sh"), "--dry-run"],
                            capture_output=True, text=True, timeout=60,
                            env=clean_env(), cwd=tmp_path)
    assert result.returncode != 0
    for name in ["TPU_PROJECT", "TPU_ZONE", "TPU_NAME", "TPU_ACCELERATOR_TYPE", "TPU_RUNTIME_VERSION"]:
        assert name in result.stderr
    assert "tpu.env.example" in result.stderr


@pytest.mark.parametrize(
    "env_extra, message",
    [
        ("TPU_PROVISIONING=cheap\n", "TPU_PROVISIONING"),
        ("TPU_QUEUED=yes\n", "TPU_QUEUED"),
        ("TPU_QUEUED=true\nTPU_PROVISIONING=preemptible\n", "queued"),
        ("not a setting\n", "expected KEY=value"),
    ],
)
def test_bad_settings_are_refused(env_extra, message, tmp_path):
    result = run("create", "--dry-run", env_text=ENV_FILE + env_extra, tmp_path=tmp_path)
    assert result.returncode != 0 and message in result.stderr


def test_missing_env_file_and_unknown_option_fail(tmp_path):
    result = subprocess.run(["bash", str(SCRIPTS / "create.sh"), "--env", str(tmp_path / "nope")],
                            capture_output=True, text=True, env=clean_env(), timeout=60)
    assert result.returncode != 0 and "env file not found" in result.stderr
    result = run("delete", "--dry-run", "--bogus", tmp_path=tmp_path)
    assert result.returncode != 0 and "--bogus" in result.stderr


@pytest.mark.parametrize("script", ALL)
def test_help(script):
    result = subprocess.run(["bash", str(SCRIPTS / f"{script}.sh"), "--help"],
                            capture_output=True, text=True, env=clean_env(), timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith(f"Usage: tpu_scripts/{script}.sh")
    assert "--dry-run" in result.stdout and "--env FILE" in result.stdout


def test_env_example_is_complete_for_every_script(tmp_path):
    """The example a user copies has every setting the scripts require."""
    example = (SCRIPTS / "tpu.env.example").read_text()
    for script in ALL:
        result = run(script, "--dry-run", env_text=example, tmp_path=tmp_path)
        assert result.returncode == 0, (script, result.stderr)
