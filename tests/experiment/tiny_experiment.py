"""The tests' tiny experiment: one tiny base x two ShareGPT-style budgets x two seeds, evaluated by held-out
loss and style against the shipped held-out replies. `--config=tests/experiment/tiny_experiment.py:ROOT`
(or `:ROOT,seeds=0`) with ROOT holding base/ (a converted tiny checkpoint) and build/ (a data.build output)."""

import os

from easylm_imitate.assets import asset_path
from easylm_imitate.experiment.spec import add_cells, base, dataset, evaluation, new_experiment

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str):
    """4 cells: tiny x {2K, 4K} tokens x seeds {0, 1} (the report shows the spread over seeds).
    `ROOT,seeds=0` keeps only the listed seeds (comma-separated after `seeds=`: tests that need fewer cells)."""
    root, _, seeds = arg.partition(",seeds=")
    c = new_experiment("tiny")
    c.bases.tiny = base(f"{root}/base", os.path.join(HERE, "tiny_train.py"), "tiny", params=1e5)
    c.datasets.small = dataset("budget", build_dir=f"{root}/build", budget="2K")
    c.datasets.large = dataset("budget", build_dir=f"{root}/build", budget="4K")
    c.reference.file = asset_path("smoke_conversations_eval.jsonl")  # held-out prompts with reference replies
    c.evals.loss = evaluation("heldout_loss", limit=8)
    c.evals.style = evaluation("style", limit=3, max_new_tokens=8, batch_size=3)
    add_cells(c, seeds=tuple(int(x) for x in (seeds or "0,1").split(",")))
    return c
