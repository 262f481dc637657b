"""Key numbers of a finished stage, read from what it wrote (for progress lines and markers)."""

from __future__ import annotations

import json
import os


def _json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _train(stage_dir: str) -> dict:
    rows = []
    try:
        with open(os.path.join(stage_dir, "metrics.jsonl"), encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        pass
    out = {}
    for row in rows:
        for key in ("step", "loss", "eval_loss"):
            if key in row:
                out[key] = row[key]
    return out


def summarize(kind: str, stage_dir: str) -> dict:
    """A small dict of the numbers a user looks at first for a stage of `kind`."""
    if kind == "train":
        return _train(stage_dir)
    if kind == "data":
        d = _json(os.path.join(stage_dir, "data.json"))
        return {k: d[k] for k in ("records", "tokens") if k in d}
    if kind == "results":
        d = _json(os.path.join(stage_dir, "results.json"))
        return {"evaluations": len(d.get("evaluations", {}))}
    d = _json(os.path.join(stage_dir, "results.json"))
    out = {k: v for k, v in d.get("metrics", {}).items() if "/" not in k and isinstance(v, (int, float))}
    if d.get("status") == "failed":
        out["failed"] = d.get("failure")
    return dict(list(out.items())[:6])


def render(summary: dict) -> str:
    """`k=v` pairs, floats to 4 significant digits."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())
