"""tpu_scripts/gpu/: the single-node recipe and the SLURM batch script start the trainer
with the GPU settings, and every XLA flag they set is one the installed jaxlib accepts
(an unknown flag aborts XLA at start-up)."""

import os
import pathlib
import shlex
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
GPU = REPO / "tpu_scripts" / "gpu"
TRAIN_FLAGS = ["--config=configs/llama_7b_imitation.py", "--workdir=runs/a b"]


def env_without(*names, **extra):
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("SLURM_")}
    env.update(extra)
    return env


def gpu_xla_flags():
    out = subprocess.run(
        ["bash", "-c", f"unset XLA_FLAGS; source {GPU / 'xla_env.sh'}; printf %s \"$XLA_FLAGS\""],
        capture_output=True, text=True, check=True, timeout=60)
    return out.stdout


def test_xla_flags_are_known_to_the_installed_jaxlib():
    flags = gpu_xla_flags()
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in flags.split()
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices()"],
        env=env_without("XLA_FLAGS", XLA_FLAGS=flags, JAX_PLATFORMS="cpu"),
        capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    # The probe can fail: a flag XLA does not know aborts the process.
    bad = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices()"],
        env=env_without("XLA_FLAGS", XLA_FLAGS=flags + " --xla_gpu_no_such_flag=true",
                        JAX_PLATFORMS="cpu"),
        capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Unknown flag" in bad.stderr


def test_user_xla_flags_are_kept_after_ours():
    out = subprocess.run(
        ["bash", "-c", f"source {GPU / 'xla_env.sh'}; printf %s \"$XLA_FLAGS\""],
        env=env_without("XLA_FLAGS", XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=false"),
        capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert out[-1] == "--xla_gpu_enable_latency_hiding_scheduler=false"  # the last one wins


def test_single_node_dry_run_prints_env_and_command():
    result = subprocess.run(
        ["bash", str(GPU / "single_node.sh"), "--dry-run", "--gpus=4", "--mem-fraction=0.85",
         "--", *TRAIN_FLAGS],
        env=env_without("XLA_FLAGS", "CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                        "NCCL_DEBUG", EASYLM_PYTHON="/opt/py/bin/python"),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    words = shlex.split(result.stdout)
    assignments = dict(w.split("=", 1) for w in words[:4])
    assert assignments["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert assignments["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.85"
    assert assignments["XLA_FLAGS"] == gpu_xla_flags()
    assert words[4:] == ["/opt/py/bin/python", "-m", "easylm_imitate.train", *TRAIN_FLAGS]


def test_single_node_runs_the_trainer_with_those_settings(tmp_path):
    """Not a dry run: the interpreter it starts sees the flags and the exported settings."""
    fake = tmp_path / "python"
    fake.write_text('#!/usr/bin/env bash\necho "GPUS=$CUDA_VISIBLE_DEVICES FRAC=$XLA_PYTHON_CLIENT_MEM_FRACTION"\n'
                    'echo "FLAGS=$XLA_FLAGS"\nprintf "ARG=%s\\n" "$@"\n')
    fake.chmod(0o755)
    result = subprocess.run(
        ["bash", str(GPU / "single_node.sh"), "--gpus=2", *TRAIN_FLAGS],
        env=env_without("XLA_FLAGS", "CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                        EASYLM_PYTHON=str(fake)),
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "GPUS=0,1 FRAC=0.90"
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in lines[1]
    assert lines[2:] == ["ARG=-m", "ARG=easylm_imitate.train", *(f"ARG={f}" for f in TRAIN_FLAGS)]


def test_single_node_needs_training_flags_and_valid_gpus():
    for args, message in [([], "no training flags"), (["--gpus=0", "--config=c"], "--gpus")]:
        result = subprocess.run(["bash", str(GPU / "single_node.sh"), *args],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and message in result.stderr
    helped = subprocess.run(["bash", str(GPU / "single_node.sh"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--gpus=N" in helped.stdout


def test_slurm_script_runs_one_srun_task_per_gpu(tmp_path):
    script = (GPU / "slurm.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=8" in script and "#SBATCH --gpus-per-node=8" in script
    result = subprocess.run(
        ["bash", str(GPU / "slurm.sbatch"), *TRAIN_FLAGS],
        env=env_without("EASYLM_PYTHON", DRY_RUN="1", SLURM_SUBMIT_DIR=str(REPO),
                        SLURM_GPUS_ON_NODE="8", SLURM_NTASKS_PER_NODE="8"),
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # tasks match GPUs: no warning
    words = shlex.split(result.stdout)
    assert words[:2] == ["srun", "--kill-on-bad-exit=1"]
    assert f"--chdir={REPO}" in words
    assert words[-5:] == [str(REPO / ".venv/bin/python"), "-m", "easylm_imitate.train", *TRAIN_FLAGS]


def test_slurm_script_warns_and_fails_fast(tmp_path):
    warned = subprocess.run(
        ["bash", str(GPU / "slurm.sbatch"), "--config=c"],
        env=env_without(DRY_RUN="1", SLURM_SUBMIT_DIR=str(REPO), SLURM_GPUS_ON_NODE="8",
                        SLURM_NTASKS_PER_NODE="1"),
        capture_output=True, text=True, timeout=60)
    assert warned.returncode == 0 and "1 tasks but 8 GPUs" in warned.stderr
    no_args = subprocess.run(["bash", str(GPU / "slurm.sbatch")],
                             env=env_without(SLURM_SUBMIT_DIR=str(REPO)),
                             capture_output=True, text=True, timeout=60)
    assert no_args.returncode != 0 and "no training flags" in no_args.stderr
    elsewhere = subprocess.run(["bash", str(GPU / "slurm.sbatch"), "--config=c"],
                               env=env_without(SLURM_SUBMIT_DIR=str(tmp_path)),
                               capture_output=True, text=True, timeout=60)
    assert elsewhere.returncode != 0 and "not an easylm_imitate checkout" in elsewhere.stderr
