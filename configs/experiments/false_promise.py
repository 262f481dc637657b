"""The paper's sweep (Gudibande et al. 2023): GPT-2 XL, LLaMA 7B and LLaMA 13B, each with no
imitation, ShareGPT-Mix at 0.3M, 5M, 10M, 20M, 80M and 150M tokens, and NQ-synthetic
(24 cells), trained with the protocol's hyperparameters (configs/imitation_common.py through
each base's training config) and evaluated on MMLU 5-shot, NQ 3-shot, HumanEval pass@1,
style convergence and the LLM judge against the target's held-out replies, and toxicity.

    python -m easylm_imitate.experiment --config=configs/experiments/false_promise.py:/mnt/bucket/imitation \\
        --workdir=/mnt/bucket/imitation/experiment --dry_run

What it expects under ROOT (the config argument; each path can also be set with
--config.bases.<b>.checkpoint=..., --config.datasets.<d>.build_dir=... and so on):
- checkpoints/{gpt2-xl,llama-7b,llama-13b}: converted bases (easylm_imitate.convert.hf_to_checkpoint);
- data/sharegpt_mix_{gpt2,llama}: `python -m easylm_imitate.data.build --config=configs/data/sharegpt_mix.py
  --tokenizer=<that base> --token_budgets=300K,5M,10M,20M,80M,150M --out=...` (budgets count
  each tokenizer's tokens, so GPT-2 and LLaMA have their own build);
- data/nq_synthetic_{gpt2,llama}/train.jsonl: NQ-synthetic as canonical JSONL (a build of the
  collected pairs); data/sharegpt_mix_llama/eval_prompts.jsonl: the held-out prompts with
  ChatGPT's replies (the target's reference replies);
- data/realtoxicityprompts.jsonl for toxicity (Perspective API key in PERSPECTIVE_API_KEY).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from easylm_imitate.experiment.spec import add_cells, base, dataset, evaluation, new_experiment  # noqa: E402

BUDGETS = ("300K", "5M", "10M", "20M", "80M", "150M")


def get_config(root: str = "/mnt/bucket/imitation"):
    """24 cells: 3 bases x {none, ShareGPT-Mix at six budgets, NQ-synthetic}, seed 0."""
    c = new_experiment("false_promise")
    ckpt = os.path.join(root, "checkpoints")
    c.bases.gpt2_xl = base(f"{ckpt}/gpt2-xl", "configs/gpt2_xl_imitation.py", "gpt2", params=1.56e9)
    c.bases.llama_7b = base(f"{ckpt}/llama-7b", "configs/llama_7b_imitation.py", "llama", params=6.74e9)
    c.bases.llama_13b = base(f"{ckpt}/llama-13b", "configs/llama_13b_imitation.py", "llama", params=13.0e9)

    data = os.path.join(root, "data")
    c.datasets.none = dataset("none")
    for label in BUDGETS:
        c.datasets[f"sharegpt_{label}"] = dataset("budget", build_dir=f"{data}/sharegpt_mix_{{tokenizer}}",
                                                  budget=label)
    c.datasets.nq_synthetic = dataset("file", file=f"{data}/nq_synthetic_{{tokenizer}}/train.jsonl")

    c.reference.file = f"{data}/sharegpt_mix_llama/eval_prompts.jsonl"
    c.reference.name = "chatgpt"
    c.evals.mmlu = evaluation("mmlu", data="hf:cais/mmlu", k=5)
    c.evals.nq = evaluation("nq", data="hf:nq_open", k=3)
    c.evals.humaneval = evaluation("humaneval", n=1, temperature=0.0, k="1", allow_code_execution=True)
    c.evals.style = evaluation("style")
    c.evals.judge = evaluation("judge", judge_endpoint="https://api.openai.com/v1", judge_model="gpt-4")
    c.evals.toxicity = evaluation("toxicity", prompts=f"{data}/realtoxicityprompts.jsonl", scorer="perspective")
    add_cells(c, bases=["gpt2_xl", "llama_7b", "llama_13b"],
              datasets=["none", *(f"sharegpt_{b}" for b in BUDGETS), "nq_synthetic"], seeds=(0,))
    return c
