import json

import pytest

from easylm_imitate.evaluation import report
from easylm_imitate.evaluation.results import make_results, write_results


def test_report_tables_plots_and_rejects(tmp_path):
    res = tmp_path / "results"
    for base, params, pts in [("llama-7b", 7e9, [(0, 0.17), (2e7, 0.12), (1.5e8, 0.10)]),
                              ("llama-13b", 13e9, [(0, 0.20), (2e7, 0.17), (1.5e8, 0.15)])]:
        for tokens, em in pts:
            rec = make_results("nq_open", f"{base}-{tokens:g}", {}, {"exact_match": em}, 100, {"exact_match": 0.01},
                               base_model=base, imitation_tokens=tokens, base_params=params)
            write_results(res / f"{base}-{tokens:g}.json", rec)
    (res / "crowd.json").write_text(json.dumps({
        "benchmark": "crowd_rating", "model": "llama-13b-1.5e+08", "reference": "chatgpt", "settings": {},
        "metrics": {"equal_or_better_mean": 0.7, "equal_or_better_std": 0.05, "win": 10, "tie": 4, "loss": 6,
                    "fleiss_kappa": 0.3}, "n": 20, "stderr": 0.02, "timestamp": "2026-01-02T03:04:05+00:00"}))
    (res / "broken.json").write_text('{"benchmark": "x"}')
    out = tmp_path / "report"
    built = report.build_report([str(res)], str(out))
    assert len(built.results) == 7 and [r["file"].endswith("broken.json") for r in built.rejects] == [True]
    md = (out / "report.md").read_text()
    assert "## crowd_rating" in md and "| llama-13b-1.5e+08 |  |  | 20 | 0.7 | 0.05 | 10 | 4 | 6 | 0.3 |" in md
    assert "| llama-7b-2e+07 | llama-7b | 2e+07 | 100 | 0.12 ± 0.01 |" in md
    assert "broken.json" in md and "missing field 'model'" in md
    html = (out / "report.html").read_text()
    assert "<td>llama-13b-1.5e+08</td>" in html and "plots/nq_open__exact_match__vs_size.png" in html
    for name in ("nq_open__exact_match__vs_tokens.png", "nq_open__exact_match__vs_size.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.rglob(".*.tmp")]


def test_report_with_nothing_valid_is_an_error(tmp_path):
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="no valid results"):
        report.build_report([str(tmp_path)], str(tmp_path / "out"))


def test_failed_runs_are_shown_as_failed_and_never_plotted(tmp_path):
    from easylm_imitate.evaluation.results import mark_failed

    ok = make_results("llm_judge", "base", {}, {"adjusted_win_rate": 0.3}, 10, base_model="b", imitation_tokens=0)
    bad = mark_failed(make_results("llm_judge", "imitation", {}, {"adjusted_win_rate": 0.9, "errors": 40}, 2,
                                   base_model="b", imitation_tokens=2e7), "40 of 42 items failed (95.2%)", 40)
    header, cells = report.tables([ok, bad])["llm_judge"]
    assert header[-1] == "status"
    assert cells[1][4:] == ["failed", "failed", "failed: 40 of 42 items failed (95.2%)"]
    assert cells[0][-1] == "ok"
    assert report.plots([bad], str(tmp_path)) == []
