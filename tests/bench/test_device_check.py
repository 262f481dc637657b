"""bench/device_check.sh (the prepared GPU check): --help lists its flags and a CPU --dry_run
runs the same code path on a tiny model and prints the markdown table for bench/RESULTS.md."""

import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "bench", "device_check.sh")


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as users run it
    return subprocess.run([SCRIPT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_help_names_every_flag():
    proc = _run("--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for flag in ("--preset", "--impls", "--batch", "--seq", "--steps", "--remat", "--prompt", "--new",
                 "--gen_batch", "--lora_rank", "--dry_run"):
        assert flag in proc.stdout, flag
    assert "8 minutes" in proc.stdout and "llama-1b" in proc.stdout


def test_dry_run_prints_one_row_per_setting():
    proc = _run("--dry_run", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("| attention | runs | train tokens/s | MFU | LoRA train tokens/s | prefill tokens/s | decode tokens/s |"
            in proc.stdout)
    rows = re.findall(r"^\| (\w+) \| (\w+) \| ([\d,]+) \| ([\d.]+)% \| ([\d,]+) \| ([\d,]+) \| ([\d,.]+) \|$",
                      proc.stdout, re.M)
    assert [(r[0], r[1]) for r in rows] == [("xla", "xla"), ("auto", "xla")], proc.stdout
    for row in rows:
        train, mfu, lora, prefill, decode = (float(x.replace(",", "")) for x in row[2:])
        assert train > 0 and 0 < mfu < 100 and lora > 0 and prefill > 0 and decode > 0, row
    assert "tiny-llama bfloat16" in proc.stdout
