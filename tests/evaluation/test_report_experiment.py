"""The experiment report: report.html from an experiment directory, with bootstrap intervals."""

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from easylm_imitate.evaluation import bootstrap, report_html, style
from easylm_imitate.evaluation.results import make_failed_results, make_results, write_results
from easylm_imitate.experiment import spec
from easylm_imitate.experiment.fingerprint import ContentHashes
from easylm_imitate.experiment.plan import ceiling_cell

REPO = Path(__file__).resolve().parents[2]
BASES = {"tiny_a": 1e8, "tiny_b": 4e8}
DATA = {"none": 0, "sharegpt_1M": 1e6, "sharegpt_5M": 5e6}


def _write(cell_dir: Path, name: str, record: dict, rows: list[dict]) -> None:
    out = cell_dir / f"eval_{name}" / "results.json"
    write_results(out, record)
    (out.parent / "results.details.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _cell(root: Path, base: str, data: str, seed: int, tokens, rng) -> None:
    cell = f"{base}__{data}__s{seed}"
    d = root / "cells" / cell
    ann = dict(base_model=base, base_params=BASES[base], **({"imitation_tokens": tokens} if tokens is not None else {}))
    p = 0.2 + 0.1 * (base == "tiny_b") + 0.02 * seed
    em = [bool(x) for x in rng.random(60) < p]
    _write(d, "nq", make_results("nq_open", cell, {}, {"exact_match": float(np.mean(em))}, 60, **ann),
           [{"exact_match": x, "exact_match_no_early_stop": x} for x in em])
    style_rows = [{"id": str(i), "model_list": bool(rng.random() < 0.5), "reference_list": bool(i % 2),
                   "model_summary": bool(rng.random() < 0.3), "reference_summary": bool(i % 3 == 0),
                   "unigram_overlap": float(rng.random()), "model_words": int(rng.integers(10, 200)),
                   "reference_words": int(rng.integers(10, 200))} for i in range(40)]
    _write(d, "style", make_results("style", cell, {}, {"unigram_overlap": float(np.mean(
        [r["unigram_overlap"] for r in style_rows])), "list_when_reference_lists": style.conditional_rate(
        [r["model_list"] for r in style_rows], [r["reference_list"] for r in style_rows])}, 40, **ann), style_rows)
    outcomes = rng.choice(["win", "tie", "loss"], 30).tolist()
    if data == "sharegpt_5M" and base == "tiny_b" and seed == 1:
        write_results(d / "eval_judge" / "results.json", make_failed_results(
            "llm_judge", cell, {}, "no item was scored (30 of 30 failed)", **ann))
    else:
        _write(d, "judge", make_results("llm_judge", cell, {}, {"adjusted_win_rate": float(np.mean(
            [{"win": 1, "tie": 0.5, "loss": 0}[o] for o in outcomes]))}, 30, **ann), [{"outcome": o} for o in outcomes])
    tox = [[float(x) for x in rng.random(3) * 0.2] for _ in range(20)]
    _write(d, "toxicity", make_results("toxicity", cell, {}, {"mean_non_toxicity": float(1 - np.mean(tox)),
                                                              "expected_max_toxicity": float(np.mean([max(t) for t in tox]))},
                                       20, **ann), [{"prompt": "p", "toxicity": t} for t in tox])


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    rng = np.random.default_rng(1)
    for base in BASES:
        for data, tokens in DATA.items():
            for seed in (0, 1):
                _cell(root, base, data, seed, tokens, rng)
        _cell(root, base, "nq_synthetic", 0, None, rng)  # local imitation: no token budget
    _ceiling(root)
    return root


def _ceiling(root: Path) -> None:
    """Run the experiment-level ceiling stage the runner plans for `reference.second_sample`:
    eval/style.py scoring the target's second sample against its first replies."""
    prompts = [f"question {i}: explain topic {i}" for i in range(12)]
    first = [f"Sure. Topic {i} in short:\n- point one\n- point two\nIn summary, topic {i} matters." for i in range(12)]
    second = [f"Certainly. Topic {i}:\n- a point\n- another point\nOverall, topic {i} matters." for i in range(12)]
    for name, replies in (("reference", first), ("second", second)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps({"id": str(i), "prompt": p, "response": r}) + "\n"
                                                    for i, (p, r) in enumerate(zip(prompts, replies))))
    c = spec.new_experiment("synthetic")
    c.reference.file, c.reference.name = str(root / "reference.jsonl"), "chatgpt"
    c.reference.second_sample = str(root / "second.jsonl")
    c.evals.style = spec.evaluation("style", limit=10)
    stage = ceiling_cell(c, str(root), ContentHashes(None)).stages[0]
    run = subprocess.run(stage.command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def built(experiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, report_html.build_experiment_report(str(experiment), str(out), n_boot=400)


def test_report_html_is_self_contained_with_tables_and_embedded_plots(built):
    out, written = built
    page = (out / "report.html").read_text()
    for title in ("Figure 4", "Table 1: NQ exact match", "Table 2: style convergence", "LLM judge", "Toxicity"):
        assert title in page
    imgs = re.findall(r"<img src='data:image/png;base64,([^']+)'", page)
    pngs = [f for f in written.files if f.endswith(".png")]
    assert "plots/nq_open__exact_match__vs_tokens.png" in pngs and "plots/nq_open__exact_match__vs_size.png" in pngs
    assert len(imgs) == len(pngs) >= 6
    for data in imgs:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src='plots/" not in page  # nothing the page needs lives beside it


def test_table1_has_base_broad_and_local_per_base_model(built):
    page = (built[0] / "report.html").read_text()
    table = page.split("Table 1")[1].split("</table>")[0]
    for base in BASES:
        row = table.split(f"<td>{base}</td>")[1].split("</tr>")[0]
        assert "cells/" + f"{base}__none__s0/eval_nq/results.json" in row
        assert f"{base}__sharegpt_5M__s1/eval_nq/results.json" in row  # broad = the largest budget
        assert f"{base}__nq_synthetic__s0/eval_nq/results.json" in row  # local imitation


def test_every_number_has_an_interval_a_seed_spread_and_a_link(built):
    page = (built[0] / "report.html").read_text()
    two_seeds = re.findall(r"<td class=''>([0-9.]+) \[([0-9.]+), ([0-9.]+)\] <span class='sd'>sd [0-9.e-]+ over 2 seeds", page)
    assert len(two_seeds) >= 12
    for value, lo, hi in two_seeds:
        assert float(lo) <= float(value) <= float(hi)
    assert re.search(r"<a href='\.\./[^']*tiny_a__none__s0/eval_nq/results\.json'[^>]*>s0=", page)


def test_failed_runs_are_marked_failed_and_keep_the_other_seeds(built):
    page = (built[0] / "report.html").read_text()
    judge = page.split("LLM judge")[1].split("</table>")[0]
    row = judge.split("<td>sharegpt_5M</td>")[2].split("</tr>")[0]  # tiny_b's row (tiny_a comes first)
    assert "class='failed'" in row and "failed (s1)" in row and "no item was scored" in row
    assert "tiny_b__sharegpt_5M__s0/eval_judge/results.json" in row  # the seed that worked is still reported
    assert "<h2>Failed runs</h2>" in page


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_items():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 2000):
        rows = [{"exact_match": bool(x)} for x in rng.random(n) < 0.3]
        est = np.mean([r["exact_match"] for r in rows])
        lo, hi = bootstrap.interval([bootstrap.replicates("nq_open", "exact_match", rows)])
        assert lo <= est <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 3  # ~ 1/sqrt(n)
    rows = [{"exact_match": bool(x)} for x in rng.random(50) < 0.3]
    a = bootstrap.replicates("nq_open", "exact_match", rows)
    assert np.array_equal(a, bootstrap.replicates("nq_open", "exact_match", rows))  # fixed seed
    assert bootstrap.replicates("nq_open", "no_such_metric", rows) is None


def test_ratio_and_correlation_statistics_match_the_evaluation():
    from easylm_imitate.evaluation import stats

    rng = np.random.default_rng(3)
    rows = [{"model_list": bool(rng.random() < 0.5), "reference_list": bool(rng.random() < 0.5),
             "model_words": int(rng.integers(1, 99)), "reference_words": int(rng.integers(1, 99))} for _ in range(30)]
    stat = bootstrap.STATISTICS[("style", "list_when_reference_lists")]
    cols = stat[0](rows)
    assert stat[1](*[c[None] for c in cols])[0] == pytest.approx(style.conditional_rate(
        [r["model_list"] for r in rows], [r["reference_list"] for r in rows]))
    stat = bootstrap.STATISTICS[("style", "length_correlation")]
    assert stat[1](*[c[None] for c in stat[0](rows)])[0] == pytest.approx(stats.pearson(
        [r["model_words"] for r in rows], [r["reference_words"] for r in rows]))


def test_report_binary_experiment_flag(experiment, tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "eval" / "report.py"), f"--experiment={experiment}",
                          f"--out_dir={tmp_path / 'r'}", "--n_boot=100"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "(1 failed, 0 skipped)" in run.stdout and str(tmp_path / "r" / "report.html") in run.stdout
    assert (tmp_path / "r" / "report.html").stat().st_size > 10000
    bad = subprocess.run([sys.executable, str(REPO / "eval" / "report.py"), f"--experiment={tmp_path}",
                          f"--out_dir={tmp_path / 'x'}"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "not an experiment directory" in bad.stderr


def test_humaneval_and_loss_statistics_match_the_evaluation():
    from easylm_imitate.evaluation import humaneval

    executed = [{"task_id": f"t{i // 4}", "passed": (i * 7) % 3 == 0} for i in range(40)]
    stat = bootstrap.STATISTICS[("humaneval", "pass@1")]
    assert stat[1](*[c[None] for c in stat[0](executed)])[0] == pytest.approx(
        humaneval.score(executed, ks=(1,))["metrics"]["pass@1"])
    rows = [{"nll": 10.0, "tokens": 5}, {"nll": 2.0, "tokens": 1}]
    stat = bootstrap.STATISTICS[("heldout_loss", "loss")]
    assert stat[1](*[c[None] for c in stat[0](rows)])[0] == pytest.approx(12.0 / 6)


def test_table2_ends_with_the_targets_second_sample_as_the_ceiling(built, experiment):
    assert (experiment / "target" / "eval_style" / "results.json").exists()
    table = (built[0] / "report.html").read_text().split("Table 2")[1].split("</table>")[0]
    row = table.split("<tr class='ceiling'>")[1].split("</tr>")[0]
    assert "<td>chatgpt (second sample)</td>" in row and "ceiling" in row
    assert "target/eval_style/results.json" in row  # linked to the stage's results file
    record = json.loads((experiment / "target" / "eval_style" / "results.json").read_text())
    assert record["n"] == 10  # the cells' style settings (limit=10) apply to the ceiling too
    value = float(re.search(r"<td class=''><a [^>]*>([0-9.]+) \[", row).group(1))
    assert value == pytest.approx(record["metrics"][report_html.STYLE[0]], abs=1e-3)
    assert table.index("<tr class='ceiling'>") > table.index("tiny_b")  # after every cell's row
