"""The plan: every cell's stages in run order, each with its fingerprint, command and paths.

Stages of a cell: `data` (check the imitation subset and record what it holds), `train`
(fine-tune the base on it), `eval_<name>` (one per evaluation) and `results` (the cell's
results JSON). With `reference.second_sample` the plan ends with one experiment-level
pseudo-cell, `target`, whose one stage scores the target's second sample (the style ceiling). A cell without imitation data has neither data nor train stage: its
evaluations read the base checkpoint. A stage's fingerprint hashes its settings and its
upstream stages' fingerprints (and the content of the files it reads that no stage makes),
so a change re-runs exactly the stages that depend on it.
"""

from __future__ import annotations

import dataclasses
import os

from easylm_imitate.experiment import commands as C
from easylm_imitate.experiment import spec
from easylm_imitate.experiment.fingerprint import ContentHashes, digest


@dataclasses.dataclass
class Stage:
    """One unit of work of one cell."""

    cell: str
    name: str  # data | train | eval_<name> | results
    kind: str  # data | train | <evaluation kind> | results
    fingerprint: str
    command: list[str]
    out_dir: str  # what the stage writes (removed when the stage must start afresh)
    deps: list[str]  # ids of the stages it reads
    tokens: int | None = None  # train: imitation tokens (the budget; None when unknown before the data stage)
    resumable: bool = False  # a half-finished run continues from its own outputs (train)

    @property
    def id(self) -> str:
        """`<cell>/<stage>`."""
        return f"{self.cell}/{self.name}"


@dataclasses.dataclass
class Cell:
    """One base x data x seed point and its stages."""

    name: str
    base: str
    data: str
    seed: int
    tokens: int | None  # imitation tokens (0 without imitation)
    stages: list[Stage]
    experiment_level: bool = False  # not a grid point: the target's ceiling (`ceiling_cell`)


def _sub(path: str, base) -> str:
    return spec.resolve_path(path.replace("{tokenizer}", base.tokenizer))


def _data_stage(name: str, cell_dir: str, data, base, hashes: ContentHashes) -> tuple[Stage, str, int | None]:
    if data.kind == "budget":
        label, tokens = spec.budget_tokens(data.budget)
        build_dir = _sub(data.build_dir, base)
        file = os.path.join(build_dir, f"train_{label}.jsonl")
        extra = [C.flag("report", os.path.join(build_dir, "report.json")), C.flag("budget", label)]
    else:
        file, tokens, extra = _sub(data.file, base), None, []
    out_dir = os.path.join(cell_dir, "data")
    settings = {"kind": data.kind, "file": file, "budget": data.budget, "content": hashes.file(file)}
    command = C.module_command("data", C.flag("file", file), *extra, C.flag("out", os.path.join(out_dir, "data.json")))
    return Stage(name, "data", "data", digest(settings), command, out_dir, []), file, tokens


def _train_stage(name: str, cell, cell_dir: str, base, data_stage: Stage, file: str, tokens,
                 hashes: ContentHashes) -> Stage:
    wanted = cell.train.copy_and_resolve_references()
    with wanted.unlocked():
        wanted.init_from = spec.resolve_path(base.checkpoint)
        wanted.data.train_file = file
        wanted.seed = int(cell.seed)
    config_file = spec.resolve_path(base.train_config)
    from_file = spec.load_train_config(config_file).copy_and_resolve_references().to_dict()
    out_dir = os.path.join(cell_dir, "train")
    command = C.module_command("train", C.flag("config", config_file), C.flag("workdir", out_dir),
                               *C.config_overrides(from_file, wanted.to_dict()))
    fp = digest({"train": wanted.to_dict(), "data": data_stage.fingerprint,
                 "base": hashes.directory(wanted.init_from)})
    return Stage(name, "train", "train", fp, command, out_dir, [data_stage.id], tokens=tokens, resumable=True)


def _eval_stage(name: str, eval_name: str, e, c, cell, base, model: str, model_fp: str, tokens,
                template: str, cell_dir: str, hashes: ContentHashes, deps: list[str]) -> Stage:
    out_dir = os.path.join(cell_dir, f"eval_{eval_name}")
    out = os.path.join(out_dir, "results.json")
    argv = C.eval_binary(e.kind) + [C.flag("checkpoint", model), C.flag("out", out), C.flag("model_name", name),
                                    C.flag("base_model", cell.base)]
    if tokens is not None:
        argv.append(C.flag("imitation_tokens", tokens))
    if base.params:
        argv.append(C.flag("base_params", base.params))
    reference = ""
    if e.kind in spec.REFERENCE_EVALS:
        reference = _sub(c.reference.file, base)
        if e.kind == "heldout_loss":
            argv += [C.flag("data", reference), C.flag("template", template)]
        else:
            argv += [C.flag("reference", reference), C.flag("reference_name", c.reference.name)]
    argv += [C.flag(k, v) for k, v in sorted(e.flags.to_dict().items())]
    settings = {"kind": e.kind, "flags": e.flags.to_dict(), "reference": reference,
                "reference_content": hashes.file(reference) if reference else None, "model": model_fp,
                "argv": argv[2:]}
    return Stage(name, f"eval_{eval_name}", e.kind, digest(settings), argv, out_dir, deps)


CEILING_CELL = "target"


def ceiling_cell(c, workdir: str, hashes: ContentHashes) -> Cell | None:
    """The experiment-level stage `target/eval_style` when `reference.second_sample` is set:
    eval/style.py scoring the target's second reply to the held-out prompts against its first
    (the reference), the ceiling of style convergence; written to
    `workdir/target/eval_style/results.json` (outside cells/) with model name
    `<reference.name> (second sample)`. None without a second sample."""
    second = c.reference.get("second_sample", "")
    if not second:
        return None
    name = c.reference.name
    reference, answers = spec.resolve_path(c.reference.file), spec.resolve_path(second)
    style_evals = [e for e in c.evals.values() if e.kind == "style"]
    flags = style_evals[0].flags.to_dict() if style_evals else {}  # same settings (e.g. limit) as the cells
    out_dir = os.path.join(workdir, CEILING_CELL, "eval_style")
    argv = C.eval_binary("style") + [C.flag("reference", reference), C.flag("reference_name", name),
                                     C.flag("answers", answers), C.flag("out", os.path.join(out_dir, "results.json")),
                                     C.flag("model_name", f"{name} (second sample)"), C.flag("base_model", name)]
    argv += [C.flag(k, v) for k, v in sorted(flags.items())]
    fp = digest({"argv": argv[2:], "reference": hashes.file(reference), "answers": hashes.file(answers)})
    stage = Stage(CEILING_CELL, "eval_style", "style", fp, argv, out_dir, [])
    return Cell(CEILING_CELL, name, "second_sample", 0, 0, [stage], experiment_level=True)


def build_plan(c, workdir: str, hashes: ContentHashes) -> list[Cell]:
    """The cells of experiment config `c` with their stages, paths under `workdir`."""
    spec.validate(c)
    workdir = os.path.abspath(workdir)
    cells = []
    for name, cell in c.cells.items():
        base, data = c.bases[cell.base], c.datasets[cell.data]
        cell_dir = os.path.join(workdir, "cells", name)
        stages: list[Stage] = []
        if data.kind == "none":
            model = spec.resolve_path(base.checkpoint)
            model_fp, deps, tokens = digest({"base": hashes.directory(model), "path": model}), [], 0
        else:
            data_stage, file, tokens = _data_stage(name, cell_dir, data, base, hashes)
            train = _train_stage(name, cell, cell_dir, base, data_stage, file, tokens, hashes)
            stages += [data_stage, train]
            model, model_fp, deps = train.out_dir, train.fingerprint, [train.id]
        for eval_name, e in c.evals.items():
            stages.append(_eval_stage(name, eval_name, e, c, cell, base, model, model_fp, tokens,
                                      cell.train.data.template, cell_dir, hashes, deps))
        evals = [s for s in stages if s.name.startswith("eval_")]
        out_dir = os.path.join(cell_dir, "results")
        argv = C.module_command("results", C.flag("cell", name), C.flag("base_model", cell.base),
                                C.flag("data", cell.data), C.flag("seed", int(cell.seed)),
                                C.flag("out", os.path.join(out_dir, "results.json")))
        if tokens is not None:
            argv.append(C.flag("imitation_tokens", tokens))
        if data.kind != "none":
            argv.append(C.flag("data_manifest", os.path.join(stages[0].out_dir, "data.json")))
        argv += [C.flag("result", f"{s.name[5:]}={os.path.join(s.out_dir, 'results.json')}") for s in evals]
        fp = digest({"evals": [s.fingerprint for s in evals], "data": stages[0].fingerprint if data.kind != "none"
                     else None, "argv": argv[2:]})
        stages.append(Stage(name, "results", "results", fp, argv, out_dir, [s.id for s in evals]
                            + ([stages[0].id] if data.kind != "none" else [])))
        cells.append(Cell(name, cell.base, cell.data, int(cell.seed), tokens, stages))
    base_order = list(c.bases)
    cells.sort(key=lambda x: (base_order.index(x.base), x.tokens is None, x.tokens or 0, x.data, x.seed))
    ceiling = ceiling_cell(c, workdir, hashes)
    return cells + ([ceiling] if ceiling else [])
