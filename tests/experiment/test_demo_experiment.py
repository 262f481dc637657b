"""`make demo`'s experiment (configs/experiments/demo.py) as the runner plans it, and the
demo's closing table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from easylm_imitate import demo
from easylm_imitate.experiment import spec

DEMO = os.path.join(spec.REPO, "configs", "experiments", "demo.py")
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_PYTHON_CLIENT_PREALLOCATE="false")


def test_demo_dry_run_lists_three_budgets_and_the_offline_evaluations(tmp_path):
    workdir = tmp_path / "experiment"
    r = subprocess.run([sys.executable, "-m", "easylm_imitate.experiment", f"--config={DEMO}:{tmp_path}",
                        f"--workdir={workdir}", "--dry_run"], cwd=spec.REPO, env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    stages, cell = {}, None
    for line in r.stdout.splitlines():
        if line.startswith("cell "):
            cell = line.split()[1].rstrip(":")
            stages[cell] = []
        m = re.match(r"  (\w+)\s+(\S+)\s+[0-9a-f]{16}$", line)
        if m:
            assert m.group(1) == "pending"
            stages[cell].append(m.group(2))
    evals = ["eval_heldout_loss", "eval_humaneval", "eval_style", "results"]
    assert stages == {"smollm2_135m__none__s0": evals,
                      "smollm2_135m__sharegpt_10K__s0": ["data", "train", *evals],
                      "smollm2_135m__sharegpt_40K__s0": ["data", "train", *evals]}
    assert "train on 10K tokens" in r.stdout and "train on 40K tokens" in r.stdout
    # HumanEval really executes (sandboxed) on a stated subset; style compares with ChatGPT's held-out replies
    assert re.search(r"eval/humaneval\.py .*--allow_code_execution .*--limit=16", r.stdout)
    assert f"--reference={tmp_path}/data/eval_prompts.jsonl --reference_name=chatgpt" in r.stdout
    assert f"--config.init_from={tmp_path}/base" in r.stdout
    assert not workdir.exists()


def test_demo_config_names_what_it_skips_and_why():
    module = demo.load_experiment_module()
    assert set(module.SKIPPED) == {"judge", "nq", "mmlu", "toxicity"}
    config = module.get_config("/x")
    assert not set(module.SKIPPED) & {e.kind for e in config.evals.values()}


def _write_result(workdir, cell, benchmark, tokens, metrics):
    path = workdir / "cells" / cell / f"eval_{benchmark}" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"benchmark": benchmark, "imitation_tokens": tokens, "metrics": metrics}))


def test_demo_table_shows_each_budget_beside_the_papers_numbers(tmp_path):
    for cell, tokens, lst in (("b__none__s0", 0, 0.25), ("b__sharegpt_40K__s0", 40000, 0.75)):
        _write_result(tmp_path, cell, "style", tokens, {"list_when_reference_lists": lst,
                                                         "summary_when_reference_summarizes": None,
                                                         "unigram_overlap": 30.0, "length_correlation": 0.4})
        _write_result(tmp_path, cell, "humaneval", tokens, {"pass@1": 0.125})
        _write_result(tmp_path, cell, "heldout_loss", tokens, {"loss": 1.5})
    (tmp_path / "cells" / "b__sharegpt_10K__s0" / "train").mkdir(parents=True)  # unfinished: no row
    lines = demo.format_table(demo.cell_results(str(tmp_path))).splitlines()
    assert sum("K tokens" in line and "LLaMA" not in line for line in lines) == 1
    none_row = next(line for line in lines if "none" in line)
    budget_row = next(line for line in lines if "40K" in line)
    assert none_row.split()[-6:] == ["25%", "-", "30.0", "0.40", "12%", "1.500"]
    assert budget_row.split()[-6:] == ["75%", "-", "30.0", "0.40", "12%", "1.500"]
    assert any("LLaMA + 150M tokens" in line and "81%" in line and "42.5" in line for line in lines)
