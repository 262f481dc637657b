"""Train-step throughput: our jitted JAX step vs a plain PyTorch + transformers step.

Same architecture (SmolLM2-135M shape by default), batch, sequence length, float32 AdamW,
in one run, each side in fresh processes taking turns; prints tokens/s, MFU against a
*measured* float32 matmul peak, minor page faults per step, and the ratio.

    python bench/train_step.py [--preset smollm2-135m] [--batch 4] [--seq 512] [--steps 5] [--rounds 2]
                               [--reuse-host-memory ours|both|none] [--lora RANK]

`--lora RANK` compares our full fine-tuning step with our LoRA step (adapters of rank RANK on
every projection, AdamW on the adapters only, float32 base) instead of PyTorch: step time and
each process's peak resident memory, side by side.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from sides import run_side  # noqa: E402  (bench/sides.py)


def matmul_peak_torch(size: int = 2048) -> float:
    """Best float32 matmul FLOP/s of torch on this machine."""
    import torch

    a = torch.randn(size, size)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(5))
    return 2 * size ** 3 / best


def matmul_peak_jax(size: int = 2048) -> float:
    """Best float32 matmul FLOP/s of XLA:CPU on this machine."""
    a = jnp.ones((size, size), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(5))
    return 2 * size ** 3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ours(cfg, batch: int, seq: int):
    """One call = one of our jitted train steps (parameters and AdamW state donated), finished."""
    from easylm_imitate.models import build_model
    from easylm_imitate.train.step import TrainState, train_step

    graphdef, state = nnx.split(build_model(cfg, 0))
    params = state.to_pure_dict()
    optimizer = optax.adamw(1e-4)
    schedule = optax.constant_schedule(1e-4)
    holder = [TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))]
    data = _data(cfg, batch, seq)
    step = jax.jit(functools.partial(train_step, graphdef, optimizer, schedule, 1), donate_argnums=0)

    def one():
        holder[0], metrics = step(holder[0], data)
        jax.block_until_ready(metrics)

    return one


def lora(cfg, batch: int, seq: int, rank: int):
    """One call = one of our jitted LoRA steps (adapters of `rank` on every projection, AdamW)."""
    import ml_collections

    from easylm_imitate.lora import adapters as lora_adapters
    from easylm_imitate.lora.step import lora_train_step
    from easylm_imitate.models import build_model
    from easylm_imitate.train.step import TrainState

    graphdef, state = nnx.split(build_model(cfg, 0))
    spec = lora_adapters.make_spec(ml_collections.ConfigDict(dict(
        rank=rank, alpha=2.0 * rank, dropout=0.0, targets=".*", init="gaussian", base_dtype="float32")),
        lora_adapters.find_projections(state))
    base, adapters = state.to_pure_dict(), lora_adapters.init_adapters(spec, 0)
    optimizer = optax.adamw(1e-4)
    holder = [TrainState(adapters, optimizer.init(adapters), jnp.zeros((), jnp.int32))]
    data = _data(cfg, batch, seq)
    step = jax.jit(functools.partial(lora_train_step, graphdef, optimizer, optax.constant_schedule(1e-4), 1, spec,
                                     0), donate_argnums=0)  # seed 0 (of the dropout masks; rate 0 here)

    def one():
        holder[0], metrics = step(holder[0], base, data)
        jax.block_until_ready(metrics)

    return one


def _data(cfg, batch: int, seq: int) -> dict:
    """A random batch of the train step's arrays."""
    rng = np.random.default_rng(0)
    return {"inputs": rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32),
            "targets": rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32),
            "weights": np.ones((batch, seq), np.float32), "segment_ids": np.ones((batch, seq), np.int32),
            "positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1))}


def peer(cfg, batch: int, seq: int):
    """One call = one PyTorch + transformers step (LlamaForCausalLM, AdamW, float32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from easylm_imitate.convert.hf_config import config_to_hf

    hf_cfg = LlamaConfig(**{k: v for k, v in config_to_hf(cfg).items() if k not in ("architectures", "model_type")})
    model = LlamaForCausalLM(hf_cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))

    def one():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return one


def step_times(side: str, cfg, batch: int, seq: int, steps: int, reuse_host_memory: bool, rank: int = 0) -> dict:
    """Seconds and minor page faults of each of `steps` steps of one side, after a warm-up
    (compiling) step, and the process's peak resident memory (MiB); `reuse_host_memory`
    applies the trainer's CPU allocator setting first."""
    if reuse_host_memory:
        from easylm_imitate.train.host_memory import keep_freed_host_memory

        keep_freed_host_memory()
    if side == "lora":
        one = lora(cfg, batch, seq, rank)
    else:
        one = (ours if side == "ours" else peer)(cfg, batch, seq)
    one()
    seconds, faults = [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds.append(_timed(one))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": seconds, "faults": faults, "peak_mib": [peak]}


def alternating_runs(argv: list[str], rounds: int, sides=("ours", "peer")) -> dict[str, dict[str, list]]:
    """Step times per side, each side in its own fresh process, the sides taking turns
    (ours, peer, ours, peer, ...): neither inherits the other's threads or heap, and a shared
    machine that slows down or speeds up during the run shifts both sides alike."""
    runs: dict[str, dict[str, list]] = {side: {"seconds": [], "faults": [], "peak_mib": []} for side in sides}
    for _ in range(rounds):
        for side, got in runs.items():
            for key, values in run_side(__file__, argv, side).items():
                got[key] += values
    return runs


def main() -> None:
    """Run both sides and print the comparison."""
    from easylm_imitate.models import get_preset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--remat", default="none")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="our compute dtype")
    p.add_argument("--rounds", type=int, default=2, help="processes per side, alternating")
    p.add_argument("--reuse-host-memory", default="ours", choices=["ours", "both", "none"],
                   help="which sides get the trainer's glibc setting that keeps freed memory "
                        "(train/host_memory.py); 'ours' is each side as users run it")
    p.add_argument("--lora", type=int, default=0, metavar="RANK",
                   help="compare our full fine-tuning step with our LoRA step of this rank (not PyTorch)")
    p.add_argument("--side", choices=["ours", "peer", "lora"], help="(internal) time one side, print JSON")
    args = p.parse_args()
    cfg = get_preset(args.preset, remat=args.remat, dtype=args.dtype)
    if args.side:
        reuse = args.reuse_host_memory == "both" or args.reuse_host_memory == args.side
        print(json.dumps(step_times(args.side, cfg, args.batch, args.seq, args.steps, reuse, args.lora)))
        return
    if args.lora:
        compare_lora(args, cfg)
        return
    tokens = args.batch * args.seq
    flops = cfg.flops_per_token(args.seq) * tokens
    peak_j, peak_t = matmul_peak_jax(), matmul_peak_torch()
    argv = [f"--{k.replace('_', '-')}={getattr(args, k)}"
            for k in ("preset", "batch", "seq", "steps", "remat", "dtype", "reuse_host_memory")]
    runs = alternating_runs(argv, args.rounds)
    print(f"{args.preset} batch {args.batch}x{args.seq}, AdamW, our compute {args.dtype}, remat={args.remat}, "
          f"{cfg.flops_per_token(args.seq) / 1e6:.0f} MFLOP/token, host memory reuse: {args.reuse_host_memory}")
    print(f"measured float32 matmul peak: XLA {peak_j / 1e9:.0f} GFLOP/s, torch {peak_t / 1e9:.0f} GFLOP/s")
    median = {side: float(np.median(run["seconds"])) for side, run in runs.items()}
    for name, side in (("ours (JAX)", "ours"), ("PyTorch+transformers", "peer")):
        t = median[side]
        print(f"{name:22s} {tokens / t:8.1f} tokens/s  {t:6.2f} s/step  MFU {flops / t / max(peak_j, peak_t):6.1%}"
              f"  {np.median(runs[side]['faults']):9,.0f} page faults/step")
    print(f"ratio ours/peer: {median['peer'] / median['ours']:.2f}x  (medians of {len(runs['ours']['seconds'])} "
          f"steps per side, {args.rounds} alternating processes each)")


def compare_lora(args, cfg) -> None:
    """Print our full fine-tuning and LoRA steps side by side: time and peak memory."""
    argv = [f"--{k.replace('_', '-')}={getattr(args, k)}"
            for k in ("preset", "batch", "seq", "steps", "remat", "dtype", "reuse_host_memory", "lora")]
    runs = alternating_runs(argv, args.rounds, ("ours", "lora"))
    tokens = args.batch * args.seq
    print(f"{args.preset} batch {args.batch}x{args.seq}, AdamW, our compute {args.dtype}, remat={args.remat}; "
          f"LoRA rank {args.lora} on every projection, float32 base")
    for name, side in (("full fine-tuning", "ours"), (f"LoRA r={args.lora}", "lora")):
        t = float(np.median(runs[side]["seconds"]))
        print(f"{name:18s} {tokens / t:8.1f} tokens/s  {t:6.3f} s/step  peak RSS {max(runs[side]['peak_mib']):7.0f} MiB")
    print(f"(medians of {len(runs['ours']['seconds'])} steps per side, {args.rounds} alternating processes each)")


if __name__ == "__main__":
    main()
