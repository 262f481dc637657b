"""The tests' tiny experiment: one tiny base x two ShareGPT-style budgets, evaluated by held-out
loss and style against the shipped held-out replies. `--config=tests/experiment/tiny_experiment.py:ROOT`
with ROOT holding base/ (a converted tiny checkpoint) and build/ (a data.build output)."""

import os

from easylm_imitate.assets import asset_path
from easylm_imitate.experiment.spec import add_cells, base, dataset, evaluation, new_experiment

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(root: str):
    """2 cells: tiny x {2K, 4K} tokens, seed 0."""
    c = new_experiment("tiny")
    c.bases.tiny = base(f"{root}/base", os.path.join(HERE, "tiny_train.py"), "tiny", params=1e5)
    c.datasets.small = dataset("budget", build_dir=f"{root}/build", budget="2K")
    c.datasets.large = dataset("budget", build_dir=f"{root}/build", budget="4K")
    c.reference.file = asset_path("smoke_conversations_eval.jsonl")  # held-out prompts with reference replies
    c.evals.loss = evaluation("heldout_loss", limit=8)
    c.evals.style = evaluation("style", limit=3, max_new_tokens=8, batch_size=3)
    add_cells(c)
    return c
