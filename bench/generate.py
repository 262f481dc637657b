"""Generation throughput: our jitted KV-cache sampler vs transformers `generate` (PyTorch,
KV cache, greedy), same SmolLM2-135M float32 weights (from the shipped GGUF), in one run.
Each side runs in its own fresh process, the sides taking turns (as bench/train_step.py
does: in one process the two sides' threads and heaps get in each other's way).

    python bench/generate.py [--batches 1,8] [--prompt 64] [--new 128] [--repeats 2] [--rounds 1]

Prints new tokens per second for each and the ratio ours / transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
from sides import run_side  # noqa: E402  (bench/sides.py)


def load_models(gguf: str, with_hf: bool = True):
    """(our model, transformers model with identical float32 weights, or None without `with_hf`)."""
    from easylm_imitate.convert.gguf_file import config_from_gguf, gguf_tensor_getter, open_gguf, resolve_gguf
    from easylm_imitate.convert.hf_weights import model_from_params, params_from_hf, to_torch_model

    reader = open_gguf(resolve_gguf(gguf))
    cfg = config_from_gguf(reader)
    ours = model_from_params(cfg, params_from_hf(cfg, gguf_tensor_getter(reader, cfg), progress=False))
    if not with_hf:
        return ours, None
    hf = to_torch_model(ours)
    hf.generation_config.eos_token_id = None  # always generate exactly --new tokens
    return ours, hf


def best_time(fn, repeats: int) -> float:
    """Fastest of `repeats` timed calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def side_times(side: str, args) -> dict[str, float]:
    """Best seconds per batch size for one side ('ours' or 'peer'), in this process."""
    import torch

    from easylm_imitate.inference.sampler import Sampler
    from easylm_imitate.inference.sampling import SamplingParams

    ours, hf = load_models(args.gguf, with_hf=side == "peer")
    sampler = Sampler(ours, min_prompt_bucket=args.prompt) if side == "ours" else None
    rng = np.random.default_rng(0)
    best = {}
    for batch in (int(b) for b in args.batches.split(",")):
        prompts = rng.integers(100, ours.cfg.vocab_size, (batch, args.prompt))
        params = SamplingParams(max_new_tokens=args.new)

        def run_ours():
            out = sampler.generate(prompts.tolist(), params)
            assert all(len(g.tokens) == args.new for g in out)

        def run_hf():
            with torch.no_grad():
                out = hf.generate(torch.from_numpy(prompts), attention_mask=torch.ones_like(torch.from_numpy(prompts)),
                                  do_sample=False, max_new_tokens=args.new, min_new_tokens=args.new,
                                  use_cache=True, pad_token_id=0)
            assert out.shape[1] == args.prompt + args.new

        best[str(batch)] = best_time(run_ours if side == "ours" else run_hf, args.repeats)
    return best


def main() -> None:
    """Run both sides, alternating fresh processes, and print a table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", default="smollm2-135m-instruct")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2, help="timed calls per batch size in each process (best kept)")
    p.add_argument("--rounds", type=int, default=1, help="processes per side, alternating (best kept)")
    p.add_argument("--side", choices=["ours", "peer"], help="(internal) time one side, print JSON")
    args = p.parse_args()
    if args.side:
        print(json.dumps(side_times(args.side, args)))
        return

    import torch

    argv = [f"--{k}={getattr(args, k)}" for k in ("gguf", "batches", "prompt", "new", "repeats")]
    best: dict[str, dict[str, float]] = {"ours": {}, "peer": {}}
    for _ in range(args.rounds):
        for side, got in best.items():
            for batch, seconds in run_side(__file__, argv, side).items():
                got[batch] = min(seconds, got.get(batch, float("inf")))
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
          f"prompt {args.prompt} tokens, {args.new} new tokens, greedy, float32; "
          f"{args.rounds} alternating process(es) per side")
    print(f"{'batch':>5} {'ours tok/s':>11} {'transformers tok/s':>19} {'ratio':>6}")
    for batch, t_ours in best["ours"].items():
        t_hf = best["peer"][batch]
        new = int(batch) * args.new
        print(f"{batch:>5} {new / t_ours:>11.1f} {new / t_hf:>19.1f} {t_hf / t_ours:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
