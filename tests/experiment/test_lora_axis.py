"""LoRA settings as a cell axis of the experiment runner: a LoRA/QLoRA copy of a base trains
with its lora fields and is evaluated (and reported) as its own base model."""

from __future__ import annotations

import importlib.util
import os

import pytest

from easylm_imitate.experiment import spec
from easylm_imitate.experiment.fingerprint import ContentHashes
from easylm_imitate.experiment.plan import build_plan

FALSE_PROMISE = os.path.join(spec.REPO, "configs", "experiments", "false_promise.py")


def _config(tmp_path):
    s = importlib.util.spec_from_file_location("_exp_config", FALSE_PROMISE)
    module = importlib.util.module_from_spec(s)
    s.loader.exec_module(module)
    return module.get_config(str(tmp_path))


def test_a_qlora_variant_of_a_base_trains_with_its_lora_flags_and_reports_as_its_own_base(tmp_path):
    config = _config(tmp_path)
    base_name = next(iter(config.bases))
    data_name = next(d for d, v in config.datasets.items() if v.kind != "none")  # a cell that trains
    variant = spec.lora_variant(config, base_name, "qlora", rank=16, base_dtype="nf4")
    spec.add_cells(config, bases=[variant], datasets=[data_name], seeds=[0])
    spec.validate(config)
    cells = {c.name: c for c in build_plan(config, str(tmp_path / "exp"), ContentHashes(None))}
    lora_cell, full_cell = cells[spec.cell_name(variant, data_name, 0)], cells[spec.cell_name(base_name, data_name, 0)]
    train = next(s for s in lora_cell.stages if s.kind == "train")
    assert "--config.lora.rank=16" in train.command and "--config.lora.base_dtype=nf4" in train.command
    full_train = next(s for s in full_cell.stages if s.kind == "train")
    assert not any(part.startswith("--config.lora.") for part in full_train.command)
    assert full_train.fingerprint != train.fingerprint
    evals = [s for s in lora_cell.stages if s.name.startswith("eval_")]
    assert evals and all(f"--base_model={variant}" in s.command for s in evals)


def test_an_unknown_lora_field_names_the_base(tmp_path):
    config = _config(tmp_path)
    base_name = next(iter(config.bases))
    variant = spec.lora_variant(config, base_name, "bad", rnak=8)
    with pytest.raises(ValueError, match=rf"config.bases.{variant}.lora.rnak: not a lora field"):
        spec.add_cells(config, bases=[variant])
