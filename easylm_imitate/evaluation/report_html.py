"""The experiment report: one self-contained report.html (plots embedded as data URIs) plus
the PNGs, from whatever cells of an experiment directory have finished.

Sections: each benchmark vs imitation tokens (one line per base model) and vs base model size
(the paper's Figure 4); Table 1 (NQ exact match: base / broad / local imitation per base
model); Table 2 (style convergence vs imitation tokens, with the target's second sample as the
ceiling row when the experiment scored one: `DIR/target/eval_style/results.json`); judge and crowd preference against
the target; toxicity; failed runs. Every number is `value [95% bootstrap interval over
items]`, with the spread over seeds where a point has several, and links to its results file.
"""

from __future__ import annotations

import base64
import html
import os

from easylm_imitate.evaluation import bootstrap
from easylm_imitate.evaluation.report import HEADLINE, Report, _fmt, _save, _slug
from easylm_imitate.evaluation.report_experiment import Point, Summarizer, data_kind, groups, load, load_ceiling
from easylm_imitate.fileio import atomic_open

FIGURE = {"mmlu": "accuracy", "nq_open": "exact_match", "humaneval": "pass@1", "heldout_loss": "loss",
          "llm_judge": "adjusted_win_rate", "toxicity": "mean_non_toxicity"}
STYLE = HEADLINE["style"]
e = html.escape


class _Page:
    def __init__(self, out_dir: str, summarizer: Summarizer):
        self.out_dir, self.s = out_dir, summarizer

    def link(self, text: str, path: str, title: str = "") -> str:
        rel = os.path.relpath(path, self.out_dir)
        return f"<a href='{e(rel)}' title='{e(title or path)}'>{e(text)}</a>"

    def cell(self, p: Point | None) -> str:
        """A table cell: value [interval], seed spread, each number linked to its file; failed runs marked."""
        if p is None:
            return "<td class='na'>-</td>"
        parts = []
        if p.value is not None:
            text = _fmt(p.value) + (f" [{_fmt(p.ci[0])}, {_fmt(p.ci[1])}]" if p.ci else "")
            if len(p.seeds) == 1:
                parts.append(self.link(text, p.seeds[0][2]))
            else:
                parts.append(e(text) + f" <span class='sd'>sd {_fmt(p.seed_sd)} over {len(p.seeds)} seeds: "
                             + ", ".join(self.link(f"s{s}={_fmt(v)}", f) for s, v, f in p.seeds) + "</span>")
        parts += [f"<span class='failed'>{self.link(f'failed (s{s})', f, reason)}</span>" for s, reason, f in p.failed]
        return f"<td class='{'failed' if p.value is None else ''}'>" + "<br>".join(parts) + "</td>"

    def metric_table(self, grouped: dict, bench: str, metrics: list[str], ceiling: list[dict] = ()) -> str:
        """Rows: base model x data of `bench`, then a `ceiling` row per record of the target's second
        sample (`load_ceiling`); columns: `metrics` ('' when no run has the benchmark)."""
        keys = [k for k in grouped if k[0] == bench]
        ceiling = [r for r in ceiling if r["benchmark"] == bench]
        if not keys and not ceiling:
            return ""
        rows = ["<table><tr><th>base model</th><th>data</th><th>imitation tokens</th>"
                + "".join(f"<th>{e(m)}</th>" for m in metrics) + "</tr>"]
        for key in keys:
            recs = grouped[key]
            tokens = recs[0].get("imitation_tokens")
            rows.append(f"<tr><td>{e(key[1])}</td><td>{e(key[2])}</td><td>{e(_fmt(tokens) if tokens is not None else '-')}</td>"
                        + "".join(self.cell(self.s.point(recs, m)) for m in metrics) + "</tr>")
        for r in ceiling:
            rows.append(f"<tr class='ceiling'><td>{e(r.get('model', 'target'))}</td><td>ceiling: the target's second "
                        "sample vs its reference replies</td><td>-</td>"
                        + "".join(self.cell(self.s.point([r], m)) for m in metrics) + "</tr>")
        return "\n".join(rows) + "</table>"

    def table1(self, grouped: dict) -> str:
        """NQ exact match per base model: base, broad imitation (largest budget), local imitation."""
        by_base: dict[str, dict[str, list]] = {}
        for (bench, base, _), recs in grouped.items():
            if bench != "nq_open":
                continue
            kinds, kind = by_base.setdefault(base, {}), data_kind(recs[0])
            tokens = lambda rs: rs[0].get("imitation_tokens") or 0  # noqa: E731
            if kind not in kinds or (kind == "broad" and tokens(recs) > tokens(kinds[kind])):
                kinds[kind] = recs
        if not by_base:
            return ""
        rows = ["<table><tr><th>base model</th><th>base</th><th>broad imitation (largest budget)</th>"
                "<th>local imitation</th></tr>"]
        for base, kinds in by_base.items():
            rows.append(f"<tr><td>{e(base)}</td>" + "".join(
                self.cell(self.s.point(kinds[k], "exact_match") if k in kinds else None)
                for k in ("base", "broad", "local")) + "</tr>")
        return "\n".join(rows) + "</table>"


def _plot(lines: dict, xlabel: str, ylabel: str, title: str, legend: str, log: str, path: str) -> None:
    """Lines of (x, Point) with bootstrap error bars and each seed as a faint dot; saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, pts in sorted(lines.items()):
        pts = sorted(pts, key=lambda t: t[0])
        xs, ys = [x for x, _ in pts], [p.value for _, p in pts]
        err = [[y - (p.ci[0] if p.ci else y) for (_, p), y in zip(pts, ys)],
               [(p.ci[1] if p.ci else y) - y for (_, p), y in zip(pts, ys)]]
        line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        seeds = [(x, v) for x, p in pts if len(p.seeds) > 1 for _, v, _ in p.seeds]
        if seeds:
            ax.scatter(*zip(*seeds), s=10, alpha=0.4, color=line[0].get_color())
    positive = [x for ls in lines.values() for x, _ in ls if x > 0]
    ax.set_xscale(log, **({"linthresh": min(positive, default=1.0)} if log == "symlog" else {}))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(title=legend, fontsize=8)
    _save(fig, path)
    plt.close(fig)


def figure_plots(grouped: dict, s: Summarizer, out_dir: str) -> list[str]:
    """Each FIGURE benchmark vs imitation tokens (a line per base) and vs base size (a line per
    data, with two or more sizes); paths relative to `out_dir`."""
    written = []
    for bench, metric in FIGURE.items():
        vs_tokens, vs_size = {}, {}
        for (b, base, data), recs in grouped.items():
            p = s.point(recs, metric) if b == bench else None
            if p is None or p.value is None:
                continue
            r = recs[0]
            if data_kind(r) != "local":
                vs_tokens.setdefault(base, []).append((float(r.get("imitation_tokens") or 0), p))
            if "base_params" in r:
                vs_size.setdefault(data, []).append((float(r["base_params"]), p))
        plots = [("tokens", vs_tokens, "imitation tokens", "base model", "symlog")]
        if len({x for pts in vs_size.values() for x, _ in pts}) >= 2:
            plots.append(("size", vs_size, "base model parameters", "imitation data", "log"))
        for kind, lines, xlabel, legend, log in plots:
            if not lines:
                continue
            name = f"plots/{_slug(bench)}__{_slug(metric)}__vs_{kind}.png"
            _plot(lines, xlabel, metric, f"{bench}: {metric} vs {xlabel}", legend, log, os.path.join(out_dir, name))
            written.append(name)
    return written


def _img(out_dir: str, name: str) -> str:
    with open(os.path.join(out_dir, name), "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f"<figure><img src='data:image/png;base64,{data}' alt='{e(name)}'><figcaption>{e(name)}</figcaption></figure>"


STYLE_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}"
             "td:first-child,td:nth-child(2){text-align:left}.failed,.failed a{color:#b00020;font-weight:bold}"
             ".sd{color:#555;font-size:85%}tr.ceiling td{border-top:2px dashed #555}figure{display:inline-block;margin:0 1em 1em 0}.na{color:#999}")


def page(experiment_dir: str, out_dir: str, records: list[dict], rejects: list[dict], pngs: list[str],
         s: Summarizer, ceiling: list[dict] = ()) -> str:
    """The report as one HTML page (plots read from `out_dir` and embedded); `ceiling`: the
    records of `load_ceiling`."""
    grouped = groups(records)
    p = _Page(out_dir, s)
    benches = sorted({k[0] for k in grouped})
    sections = [
        ("Benchmarks vs imitation tokens and base model size (Figure 4)", "".join(_img(out_dir, n) for n in pngs)
         + "".join(f"<h3>{e(b)}</h3>" + p.metric_table(grouped, b, [FIGURE[b]]) for b in FIGURE if b in benches)),
        ("Table 1: NQ exact match, base / broad / local imitation", p.table1(grouped)),
        ("Table 2: style convergence vs imitation tokens", p.metric_table(grouped, "style", STYLE, ceiling)),
        ("Preference against the target (LLM judge)", p.metric_table(grouped, "llm_judge", HEADLINE["llm_judge"])),
        ("Preference against the target (crowd raters)", p.metric_table(grouped, "crowd_rating", HEADLINE["crowd_rating"])),
        ("Toxicity", p.metric_table(grouped, "toxicity", ["mean_non_toxicity", "expected_max_toxicity",
                                                          "toxicity_probability"])),
    ]
    failed = [r for r in list(records) + list(ceiling) if r.get("status") == "failed"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Experiment report</title><style>{STYLE_CSS}"
             f"</style></head><body><h1>Experiment report: {e(os.path.abspath(experiment_dir))}</h1>",
             f"<p>{len(records)} results files from {len({r['_cell'] for r in records})} cells. Each number is the "
             f"value [{bootstrap.LEVEL:.0%} bootstrap interval over items: {bootstrap.N_BOOT} resamples, seed "
             f"{bootstrap.SEED}, percentile method, from the run's <code>*.details.jsonl</code>]; a point with several "
             "seeds shows their mean (its interval over items of that mean) and the standard deviation over seeds. "
             "Every number links to its results file; failed runs are marked <span class='failed'>failed</span>.</p>"]
    parts += [f"<h2>{e(title)}</h2>{body}" for title, body in sections if body]
    if failed:
        parts.append("<h2>Failed runs</h2><ul>" + "".join(
            f"<li class='failed'>{p.link(r['_cell'] + ' ' + r['benchmark'], r['_file'])}: {e(r['failure'])}</li>"
            for r in failed) + "</ul>")
    if rejects:
        parts.append("<h2>Unreadable results files</h2><ul>" + "".join(
            f"<li><code>{e(r['file'])}</code>: {e(r['reason'])}</li>" for r in rejects) + "</ul>")
    return "\n".join(parts + ["</body></html>"])


def build_experiment_report(experiment_dir: str, out_dir: str, n_boot: int = bootstrap.N_BOOT) -> Report:
    """Write `out_dir/report.html` (self-contained) and `out_dir/plots/*.png` from the finished
    cells of `experiment_dir`; ValueError when no cell has a results file yet."""
    records, rejects = load(experiment_dir)
    ceiling, more = load_ceiling(experiment_dir)
    rejects += more
    if not records:
        raise ValueError(f"{experiment_dir}: no finished evaluation yet (no valid cells/*/eval_*/results.json; "
                         f"{len(rejects)} unreadable)")
    s = Summarizer(n_boot)
    pngs = figure_plots(groups(records), s, out_dir)
    with atomic_open(os.path.join(out_dir, "report.html")) as f:
        f.write(page(experiment_dir, out_dir, records, rejects, pngs, s, ceiling))
    return Report(records, rejects, ["report.html"] + pngs)
