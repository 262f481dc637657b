"""Gather results files into Markdown and HTML tables and matplotlib plots.

Plots are drawn the way the study's figures are: each headline metric against imitation
tokens (one line per base model) and against base model size (one line per imitation-token
budget). A results file needs `base_model` and `imitation_tokens` (and `base_params` for the
size plot) to appear in a plot; every valid file appears in the tables. A run marked failed
(`status: failed`) shows "failed" in every metric cell and its reason in a `status` column,
and is left out of the plots.
"""

from __future__ import annotations

import dataclasses
import glob
import html
import logging
import math
import os
import re
from collections import defaultdict

from easylm_imitate.evaluation.results import ResultsError, is_failed, read_results
from easylm_imitate.fileio import atomic_open

HEADLINE = {
    "mmlu": ["accuracy"],
    "nq_open": ["exact_match"],
    "humaneval": ["pass@1"],
    "llm_judge": ["adjusted_win_rate"],
    "crowd_rating": ["equal_or_better_mean"],
    "toxicity": ["mean_non_toxicity"],
    "style": ["list_when_reference_lists", "summary_when_reference_summarizes", "unigram_overlap",
              "length_correlation", "authoritative_tone"],
}


@dataclasses.dataclass
class Report:
    """What `build_report` wrote and what it set aside."""

    results: list[dict]
    rejects: list[dict]
    files: list[str]


def find_results(paths: list[str]) -> tuple[list[dict], list[dict]]:
    """Read results from files and directories (searched recursively for *.json); (valid, rejects)."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(glob.glob(os.path.join(p, "**", "*.json"), recursive=True))
        else:
            files.append(p)
    results, rejects = [], []
    for f in files:
        try:
            r = read_results(f)
            r["_file"] = f
            results.append(r)
        except (ResultsError, OSError) as e:
            rejects.append({"file": f, "reason": str(e)})
            logging.warning("skipping %s", e)
    return results, rejects


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4g}"
    return str(v)


def _table_columns(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for k in r["metrics"]:
            if "/" not in k and k not in cols:
                cols.append(k)
    head = HEADLINE.get(rows[0]["benchmark"], [])
    return [c for c in head if c in cols] + [c for c in cols if c not in head]


def _metric_cells(r: dict, cols: list[str]) -> list[str]:
    err = r["stderr"] if isinstance(r["stderr"], dict) else {}
    vals = []
    for c in cols:
        v = _fmt(r["metrics"].get(c))
        if isinstance(err.get(c), (int, float)) and not math.isnan(err[c]):
            v += f" ± {_fmt(err[c])}"
        vals.append(v)
    return vals


def tables(results: list[dict]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """benchmark -> (header, rows of cells), sorted by base model, size and imitation tokens."""
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_bench[r["benchmark"]].append(r)
    out = {}
    for bench, rows in sorted(by_bench.items()):
        rows.sort(key=lambda r: (r.get("base_model", ""), r.get("base_params", 0), r.get("imitation_tokens", 0), r["model"]))
        cols = _table_columns(rows)
        any_failed = any(is_failed(r) for r in rows)
        header = ["model", "base model", "imitation tokens", "n"] + cols + (["status"] if any_failed else [])
        cells = []
        for r in rows:
            row = [r["model"], r.get("base_model", ""), _fmt(r.get("imitation_tokens", "")), str(r["n"])]
            row += ["failed"] * len(cols) if is_failed(r) else _metric_cells(r, cols)
            if any_failed:
                row.append(f"failed: {r['failure']}" if is_failed(r) else "ok")
            cells.append(row)
        out[bench] = (header, cells)
    return out


def markdown(tabs: dict, plots: list[str], rejects: list[dict]) -> str:
    """The report as Markdown."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["# Evaluation report", ""]
    for bench, (header, cells) in tabs.items():
        lines += [f"## {bench}", "", "| " + " | ".join(map(esc, header)) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(map(esc, row)) + " |" for row in cells]
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{os.path.basename(p)}]({p})" for p in plots] + [""]
    if rejects:
        lines += ["## Skipped files", ""] + [f"- `{r['file']}`: {esc(r['reason'])}" for r in rejects] + [""]
    return "\n".join(lines)


def html_page(tabs: dict, plots: list[str], rejects: list[dict]) -> str:
    """The report as a standalone HTML page."""
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Evaluation report</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>",
             "</head><body><h1>Evaluation report</h1>"]
    for bench, (header, cells) in tabs.items():
        parts.append(f"<h2>{e(bench)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in cells]
        parts.append("</table>")
    if plots:
        parts.append("<h2>Plots</h2>" + "".join(f"<div><img src='{e(p)}' alt='{e(p)}'></div>" for p in plots))
    if rejects:
        parts.append("<h2>Skipped files</h2><ul>" + "".join(f"<li><code>{e(r['file'])}</code>: {e(r['reason'])}</li>" for r in rejects) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def _save(fig, path: str) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")


def _line_plot(plt, lines: dict, label, xscale: tuple[str, dict], xlabel: str, ylabel: str, title: str,
               legend: str, path: str) -> None:
    """One line per key of `lines` (key -> [(x, y)]), labelled by `label(key)`, saved to `path`."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for key, xy in sorted(lines.items()):
        xy = sorted(xy)
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=label(key))
    ax.set_xscale(xscale[0], **xscale[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(title=legend)
    _save(fig, path)
    plt.close(fig)


def plots(results: list[dict], out_dir: str) -> list[str]:
    """Draw metric-vs-imitation-tokens and metric-vs-base-size plots; returns paths relative to out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        if "base_model" in r and "imitation_tokens" in r and not is_failed(r):
            by_bench[r["benchmark"]].append(r)
    for bench, rows in sorted(by_bench.items()):
        for metric in HEADLINE.get(bench, []):
            pts = [r for r in rows if isinstance(r["metrics"].get(metric), (int, float))]
            if not pts:
                continue
            lines = defaultdict(list)
            for r in pts:
                lines[r["base_model"]].append((r["imitation_tokens"], r["metrics"][metric]))
            xscale = ("symlog", {"linthresh": max(1.0, min((r["imitation_tokens"] for r in pts if r["imitation_tokens"] > 0),
                                                           default=1.0))})
            name = f"plots/{_slug(bench)}__{_slug(metric)}__vs_tokens.png"
            _line_plot(plt, lines, str, xscale, "imitation tokens", metric, f"{bench}: {metric} vs imitation data",
                       "base model", os.path.join(out_dir, name))
            written.append(name)

            sized = [r for r in pts if "base_params" in r]
            if len({r["base_params"] for r in sized}) >= 2:
                by_tokens = defaultdict(list)
                for r in sized:
                    by_tokens[r["imitation_tokens"]].append((r["base_params"], r["metrics"][metric]))
                name = f"plots/{_slug(bench)}__{_slug(metric)}__vs_size.png"
                _line_plot(plt, by_tokens, lambda t: f"{t:,.0f} tokens", ("log", {}), "base model parameters", metric,
                           f"{bench}: {metric} vs base model size", "imitation data", os.path.join(out_dir, name))
                written.append(name)
    return written


def build_report(paths: list[str], out_dir: str) -> Report:
    """Read results under `paths`, write report.md, report.html and plots/ under `out_dir` atomically."""
    results, rejects = find_results(paths)
    if not results:
        raise ValueError(f"no valid results files under {paths} ({len(rejects)} skipped)")
    tabs = tables(results)
    pngs = plots(results, out_dir)
    with atomic_open(os.path.join(out_dir, "report.md")) as f:
        f.write(markdown(tabs, pngs, rejects))
    with atomic_open(os.path.join(out_dir, "report.html")) as f:
        f.write(html_page(tabs, pngs, rejects))
    return Report(results, rejects, ["report.md", "report.html"] + pngs)
