"""Accelerator check of `model.attention`: bfloat16 training tokens/s and MFU, a LoRA step's
tokens/s, prefill and decode tokens/s, for each attention implementation, each in its own fresh process (as
bench/train_step.py runs its sides); prints one markdown table for bench/RESULTS.md.

    python bench/device_check.py [--preset llama-1b] [--impls cudnn,xla] [--batch 4] [--seq 2048]
                                 [--steps 10] [--prompt 512] [--new 64] [--gen_batch 8]
    python bench/device_check.py --dry_run   # CPU, tiny model, a few steps, same code path

Run through bench/device_check.sh on a lent GPU (it bounds the whole run to 8 minutes).
The training steps are bench/train_step.py's (`ours`: jitted step, AdamW, donated state;
`lora`: adapters of --lora_rank on every projection, AdamW on the adapters only); the
sampler is the one bench/generate.py times. MFU counts the model's training FLOPs
(`ModelConfig.flops_per_token`) against the chip's dense bfloat16 peak (a measured matmul
peak where the chip is not in PEAK_FLOPS, e.g. on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import time

# bench/train_step.py and generate.py default JAX to the CPU; this check runs on the accelerator
# (--dry_run selects the CPU before JAX starts).
os.environ.setdefault("JAX_PLATFORMS", "")

import numpy as np  # noqa: E402
from generate import best_time  # noqa: E402  (bench/generate.py)
from sides import run_side  # noqa: E402  (bench/sides.py)
from train_step import lora, matmul_peak_jax, ours  # noqa: E402  (bench/train_step.py)

# Dense bfloat16 peak FLOP/s per chip (vendor figures, SXM parts).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
DRY_RUN = dict(preset="tiny-llama", impls="xla,auto", batch=2, seq=128, steps=2, prompt=16, new=16, gen_batch=2,
               lora_rank=4)


def train_tokens_per_second(one, batch: int, seq: int, steps: int) -> float:
    """Tokens/s of a bench/train_step.py step `one` (a call runs one step): median of `steps`
    timed steps after a compiling one."""
    one()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        one()
        times.append(time.perf_counter() - start)
    return batch * seq / float(np.median(times))


def generation_tokens_per_second(cfg, batch: int, prompt: int, new: int) -> tuple[float, float]:
    """(prefill tokens/s, decode tokens/s) of the KV-cache sampler on random weights: prefill from
    the sampler's warm-up (one prefill, no decode step), decode from the time `new` new tokens
    take beyond it (no end-of-sequence id: every row makes all `new`)."""
    from easylm_imitate.inference.sampler import Sampler
    from easylm_imitate.inference.sampling import SamplingParams
    from easylm_imitate.models import build_model

    sampler = Sampler(build_model(cfg, 0), min_prompt_bucket=prompt, min_new_bucket=new)
    params = SamplingParams(max_new_tokens=new)
    prompts = np.random.default_rng(0).integers(3, cfg.vocab_size, (batch, prompt)).tolist()

    def run():
        out = sampler.generate(prompts, params)
        assert all(len(g.tokens) == new for g in out)

    prefill = best_time(lambda: sampler.warmup(batch, prompt, params), 2)
    full = best_time(run, 2)
    return batch * prompt / prefill, batch * new / max(full - prefill, 1e-6)


def chip_peak() -> tuple[str, float]:
    """(device kind, its dense bfloat16 peak FLOP/s, or a measured float32 matmul peak)."""
    import jax

    kind = jax.devices()[0].device_kind
    for name, peak in PEAK_FLOPS.items():
        if name in kind:
            return kind, peak
    return kind, matmul_peak_jax()


def measure(impl: str, args) -> dict:
    """All figures for one attention setting, in this process."""
    import jax

    from easylm_imitate.models import get_preset
    from easylm_imitate.models.attention import current_backend, resolve_impl

    cfg = get_preset(args.preset, dtype="bfloat16", remat=args.remat, attention=impl)
    resolved = resolve_impl(impl, current_backend(), jax.numpy.bfloat16)
    train = train_tokens_per_second(ours(cfg, args.batch, args.seq), args.batch, args.seq, args.steps)
    lora_train = (train_tokens_per_second(lora(cfg, args.batch, args.seq, args.lora_rank), args.batch, args.seq,
                                          args.steps) if args.lora_rank else float("nan"))
    prefill, decode = generation_tokens_per_second(cfg, args.gen_batch, args.prompt, args.new)
    kind, peak = chip_peak()
    return {"impl": impl, "resolved": resolved, "device": kind, "train": train,
            "mfu": train * cfg.flops_per_token(args.seq) / peak, "lora": lora_train, "prefill": prefill, "decode": decode}


def table(rows: list[dict], args) -> str:
    """The markdown table (with a one-line header naming the setup)."""
    import jax

    head = (f"{rows[0]['device']}, jax {jax.__version__}: {args.preset} bfloat16, remat={args.remat}; "
            f"training batch {args.batch}x{args.seq} (AdamW; LoRA rank {args.lora_rank}); generation batch {args.gen_batch}, "
            f"prompt {args.prompt}, {args.new} new tokens\n\n")
    lines = ["| attention | runs | train tokens/s | MFU | LoRA train tokens/s | prefill tokens/s | decode tokens/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['impl']} | {r['resolved']} | {r['train']:,.0f} | {r['mfu']:.1%} | {r['lora']:,.0f} | "
                     f"{r['prefill']:,.0f} | {r['decode']:,.1f} |")
    return head + "\n".join(lines)


def parse(argv=None) -> argparse.Namespace:
    """Command line; --dry_run replaces the sizes with DRY_RUN's and runs on CPU."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="llama-1b", help="model preset (models/presets.py)")
    p.add_argument("--impls", default="cudnn,xla", help="comma-separated model.attention settings")
    p.add_argument("--batch", type=int, default=4, help="training rows per step")
    p.add_argument("--seq", type=int, default=2048, help="training sequence length")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (median kept)")
    p.add_argument("--remat", default="none", help="model.remat for the training step")
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens for prefill")
    p.add_argument("--new", type=int, default=64, help="new tokens for decode")
    p.add_argument("--gen_batch", type=int, default=8, help="sequences generated at once")
    p.add_argument("--lora_rank", type=int, default=16, help="LoRA adapter rank for the LoRA step (0: skip it)")
    p.add_argument("--dry_run", action="store_true", help="CPU, tiny model, a few steps (tests this script)")
    p.add_argument("--side", help="(internal) measure one setting, print JSON")
    args = p.parse_args(argv)
    if args.dry_run:
        for key, value in DRY_RUN.items():
            setattr(args, key, value)
        os.environ["JAX_PLATFORMS"] = "cpu"
    return args


def main() -> None:
    """Measure each setting in a fresh process and print the table."""
    args = parse()
    if args.side:
        print(json.dumps(measure(args.side, args)))
        return
    argv = [f"--{k}={getattr(args, k)}" for k in ("preset", "batch", "seq", "steps", "remat", "prompt", "new",
                                                   "gen_batch", "lora_rank")]
    rows = [run_side(__file__, argv, impl) for impl in args.impls.split(",")]
    print(table(rows, args), flush=True)


if __name__ == "__main__":
    main()
