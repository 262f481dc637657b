"""What an experiment config declares, and the helpers config files use to declare it.

An experiment config (`configs/experiments/*.py`, ml_collections) has:
- `name`;
- `bases.<b>`: `checkpoint` (a converted base model: `easylm_imitate.convert.*`),
  `train_config` (a training config file, e.g. configs/llama_7b_imitation.py), `tokenizer`
  (a tag substituted for `{tokenizer}` in data paths: token budgets count this model's
  tokens, so each tokenizer has its own build), `params` (parameter count, for the report),
  `lora` (config.lora fields its cells train with; `lora_variant` adds a LoRA/QLoRA copy of a
  base, so LoRA settings are a cell axis);
- `datasets.<d>`: `kind` none | budget | file. budget: `build_dir` (an output directory of
  `python -m easylm_imitate.data.build`) and `budget` (one of its --token_budgets, e.g.
  20M: the nested `train_<BUDGET>.jsonl` it wrote); file: `file` (any built canonical JSONL,
  e.g. NQ-synthetic);
- `evals.<e>`: `kind` (style | heldout_loss | nq | mmlu | humaneval | judge | toxicity) and
  `flags` (extra flags of that evaluation's binary, e.g. limit=100);
- `reference.file` / `reference.name`: the held-out prompts with the target's replies
  (a build's eval_prompts.jsonl) that style, judge and heldout_loss compare against;
- `reference.second_sample` (optional): the target's second reply to the same prompts (a
  JSONL eval/style.py reads as --answers); adds the experiment-level stage `target/eval_style`,
  the ceiling of style convergence;
- `cells.<cell>`: `base`, `data`, `seed` and `train` (the cell's full training config,
  loaded from its base's `train_config`; the runner sets init_from, data.train_file and
  seed). `add_cells` fills the grid; `--config.cells.<cell>.train.learning_rate=...`
  changes one cell.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from easylm_imitate.data.pipeline import parse_budgets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_KINDS = ("none", "budget", "file")
EVAL_KINDS = ("style", "heldout_loss", "nq", "mmlu", "humaneval", "judge", "toxicity")
REFERENCE_EVALS = ("style", "judge", "heldout_loss")


def new_experiment(name: str) -> ml_collections.ConfigDict:
    """An empty experiment config: fill bases, datasets, evals and reference, then add_cells."""
    c = ml_collections.ConfigDict()
    c.name = name
    c.bases = ml_collections.ConfigDict()
    c.datasets = ml_collections.ConfigDict()
    c.evals = ml_collections.ConfigDict()
    c.reference = ml_collections.ConfigDict({"file": "", "name": "target", "second_sample": ""})
    c.cells = ml_collections.ConfigDict()
    return c


def base(checkpoint: str, train_config: str, tokenizer: str, params: float = 0.0,
         lora: dict | None = None) -> ml_collections.ConfigDict:
    """A base model: converted checkpoint, training config file, tokenizer tag, parameter
    count, and `lora` fields its cells train with (e.g. {"rank": 8}; empty: full fine-tuning)."""
    return ml_collections.ConfigDict({"checkpoint": checkpoint, "train_config": train_config,
                                      "tokenizer": tokenizer, "params": float(params),
                                      "lora": ml_collections.ConfigDict(dict(lora or {}))})


def lora_variant(c: ml_collections.ConfigDict, base_name: str, name: str, **lora) -> str:
    """Add base `<base_name>_<name>`: `base_name`'s checkpoint and training config, trained
    with these `config.lora` fields (e.g. rank=16, base_dtype="nf4"). LoRA settings are then a
    cell axis like any base (`add_cells(c, bases=[...])`), reported as their own base model.
    Returns the new base's name."""
    b = c.bases[base_name]
    variant = f"{base_name}_{name}"
    c.bases[variant] = base(b.checkpoint, b.train_config, b.tokenizer, b.params,
                            lora={**dict(b.get("lora") or {}), **lora})
    return variant


def dataset(kind: str, build_dir: str = "", budget: str = "", file: str = "") -> ml_collections.ConfigDict:
    """Imitation data of a cell: none | budget (build_dir + budget) | file."""
    return ml_collections.ConfigDict({"kind": kind, "build_dir": build_dir, "budget": budget, "file": file})


def evaluation(kind: str, **flags) -> ml_collections.ConfigDict:
    """One evaluation stage: its kind and extra flags for its binary."""
    return ml_collections.ConfigDict({"kind": kind, "flags": ml_collections.ConfigDict(flags)})


def resolve_path(path: str) -> str:
    """`path` made absolute: as given relative to the current directory if it exists there,
    else relative to the repository root (configs/... works from anywhere)."""
    if not path or os.path.isabs(path):
        return path
    if os.path.exists(path) or not os.path.exists(os.path.join(REPO, path)):
        return os.path.abspath(path)
    return os.path.join(REPO, path)


def load_train_config(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of a training config file (what `--config=FILE` of the trainer loads)."""
    full = resolve_path(path)
    if not os.path.isfile(full):
        raise ValueError(f"training config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_train_config_{abs(hash(full))}", full)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def cell_name(base_name: str, data_name: str, seed: int) -> str:
    """The name of the cell base x data x seed: `<base>__<data>__s<seed>`."""
    return f"{base_name}__{data_name}__s{seed}"


def add_cells(c: ml_collections.ConfigDict, bases=None, datasets=None, seeds=(0,)) -> None:
    """Add the grid bases x datasets x seeds to `c.cells` (default: every base and dataset),
    each cell with its own copy of its base's training config."""
    for b in bases or list(c.bases):
        for d in datasets or list(c.datasets):
            for seed in seeds:
                cell = ml_collections.ConfigDict({"base": b, "data": d, "seed": int(seed)})
                cell.train = load_train_config(c.bases[b].train_config)
                for key, value in dict(c.bases[b].get("lora") or {}).items():
                    if key not in cell.train.lora:
                        raise ValueError(f"config.bases.{b}.lora.{key}: not a lora field "
                                         f"({', '.join(cell.train.lora)})")
                    cell.train.lora[key] = value
                c.cells[cell_name(b, d, seed)] = cell


def budget_tokens(label: str) -> tuple[str, int]:
    """(label as data.build names its file, tokens) of a budget such as 20M or 0.3M."""
    parsed = parse_budgets(label)
    if len(parsed) != 1:
        raise ValueError(f"expected one token budget, got {label!r}")
    return parsed[0]


def validate(c) -> None:
    """ValueError naming the config field when the experiment cannot be planned."""
    if not len(c.cells):
        raise ValueError("config.cells is empty: call add_cells(config) in the experiment config")
    for name, b in c.bases.items():
        if not b.checkpoint:
            raise ValueError(f"config.bases.{name}.checkpoint is empty (a converted base model directory)")
    for name, d in c.datasets.items():
        where = f"config.datasets.{name}"
        if d.kind not in DATA_KINDS:
            raise ValueError(f"{where}.kind: {d.kind!r} is not one of {', '.join(DATA_KINDS)}")
        if d.kind == "budget":
            if not d.build_dir:
                raise ValueError(f"{where}.build_dir is empty (an output directory of easylm_imitate.data.build)")
            try:
                budget_tokens(d.budget)
            except ValueError as e:
                raise ValueError(f"{where}.budget: {e}") from None
        if d.kind == "file" and not d.file:
            raise ValueError(f"{where}.file is empty (a canonical conversation JSONL)")
    for name, e in c.evals.items():
        if e.kind not in EVAL_KINDS:
            raise ValueError(f"config.evals.{name}.kind: {e.kind!r} is not one of {', '.join(EVAL_KINDS)}")
        if e.kind in REFERENCE_EVALS and not c.reference.file:
            raise ValueError(f"config.evals.{name} ({e.kind}) needs config.reference.file: held-out prompts "
                             "with the target's replies (a build's eval_prompts.jsonl)")
    if c.reference.get("second_sample", "") and not c.reference.file:
        raise ValueError("config.reference.second_sample needs config.reference.file: the target's first replies "
                         "to the same held-out prompts, which the second sample is scored against")
    for name, cell in c.cells.items():
        if cell.base not in c.bases:
            raise ValueError(f"config.cells.{name}.base: {cell.base!r} is not one of config.bases "
                             f"({', '.join(c.bases)})")
        if cell.data not in c.datasets:
            raise ValueError(f"config.cells.{name}.data: {cell.data!r} is not one of config.datasets "
                             f"({', '.join(c.datasets)})")
