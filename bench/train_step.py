"""Train-step throughput: our jitted JAX step vs a plain PyTorch + transformers step.

Same architecture (SmolLM2-135M shape by default), batch, sequence length, float32 AdamW,
in one run; prints tokens/s, MFU against a *measured* float32 matmul peak, and the ratio.

    python bench/train_step.py [--preset smollm2-135m] [--batch 4] [--seq 512] [--steps 5]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402


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


def ours(cfg, batch: int, seq: int, steps: int) -> float:
    """Seconds per train step of our jitted step (parameters and AdamW state donated)."""
    from easylm_imitate.models import build_model
    from easylm_imitate.train.step import TrainState, train_step

    graphdef, state = nnx.split(build_model(cfg, 0))
    params = state.to_pure_dict()
    optimizer = optax.adamw(1e-4)
    schedule = optax.constant_schedule(1e-4)
    train_state = TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))
    rng = np.random.default_rng(0)
    data = {"inputs": rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32),
            "targets": rng.integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32),
            "weights": np.ones((batch, seq), np.float32), "segment_ids": np.ones((batch, seq), np.int32),
            "positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1))}
    step = jax.jit(functools.partial(train_step, graphdef, optimizer, schedule, 1), donate_argnums=0)
    train_state, m = step(train_state, data)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        train_state, m = step(train_state, data)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def peer(cfg, batch: int, seq: int, steps: int) -> float:
    """Seconds per train step of PyTorch + transformers (LlamaForCausalLM, AdamW, float32)."""
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

    one()
    return float(np.median([_timed(one) for _ in range(steps)]))


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
    args = p.parse_args()
    cfg = get_preset(args.preset, remat=args.remat, dtype=args.dtype)
    tokens = args.batch * args.seq
    flops = cfg.flops_per_token(args.seq) * tokens
    peak_j, peak_t = matmul_peak_jax(), matmul_peak_torch()
    t_ours = ours(cfg, args.batch, args.seq, args.steps)
    t_peer = peer(cfg, args.batch, args.seq, args.steps)
    print(f"{args.preset} batch {args.batch}x{args.seq}, AdamW, our compute {args.dtype}, remat={args.remat}, "
          f"{cfg.flops_per_token(args.seq) / 1e6:.0f} MFLOP/token")
    print(f"measured float32 matmul peak: XLA {peak_j / 1e9:.0f} GFLOP/s, torch {peak_t / 1e9:.0f} GFLOP/s")
    for name, t, peak in (("ours (JAX)", t_ours, peak_j), ("PyTorch+transformers", t_peer, peak_t)):
        print(f"{name:22s} {tokens / t:8.1f} tokens/s  {t:6.2f} s/step  MFU {flops / t / max(peak_j, peak_t):6.1%}")
    print(f"ratio ours/peer: {t_peer / t_ours:.2f}x")


if __name__ == "__main__":
    main()
