"""Generation throughput: our jitted KV-cache sampler vs transformers `generate` (PyTorch,
KV cache, greedy), same SmolLM2-135M float32 weights (from the shipped GGUF), in one run.

    python bench/generate.py [--batches 1,8] [--prompt 64] [--new 128] [--repeats 2]

Prints new tokens per second for each and the ratio ours / transformers.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402


def load_models(gguf: str):
    """(our model, transformers model with identical float32 weights)."""
    from easylm_imitate.convert.gguf_file import config_from_gguf, gguf_tensor_getter, open_gguf, resolve_gguf
    from easylm_imitate.convert.hf_weights import model_from_params, params_from_hf, to_torch_model

    reader = open_gguf(resolve_gguf(gguf))
    cfg = config_from_gguf(reader)
    ours = model_from_params(cfg, params_from_hf(cfg, gguf_tensor_getter(reader, cfg), progress=False))
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


def main() -> None:
    """Run the comparison and print a table."""
    import torch

    from easylm_imitate.inference.sampler import Sampler
    from easylm_imitate.inference.sampling import SamplingParams

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", default="smollm2-135m-instruct")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    ours, hf = load_models(args.gguf)
    sampler = Sampler(ours, min_prompt_bucket=args.prompt)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
          f"prompt {args.prompt} tokens, {args.new} new tokens, greedy, float32")
    print(f"{'batch':>5} {'ours tok/s':>11} {'transformers tok/s':>19} {'ratio':>6}")
    rng = np.random.default_rng(0)
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

        t_hf = best_time(run_hf, args.repeats)
        t_ours = best_time(run_ours, args.repeats)
        new = batch * args.new
        print(f"{batch:>5} {new / t_ours:>11.1f} {new / t_hf:>19.1f} {t_hf / t_ours:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
