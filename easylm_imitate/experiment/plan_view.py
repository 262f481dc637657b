"""The plan as text (what `--dry_run` prints): every cell, its stages with their status,
tokens to train and command, then the counts."""

from __future__ import annotations

import collections
import json
import os

from easylm_imitate.experiment import commands as C
from easylm_imitate.experiment.launchers import statuses
from easylm_imitate.experiment.plan import Cell


def tokens_text(tokens: int | None) -> str:
    """20000000 -> 20M, 300000 -> 300K, None -> ? (known after the data stage)."""
    if tokens is None:
        return "?"
    for scale, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if tokens >= scale:
            return f"{tokens / scale:g}{suffix}"
    return str(tokens)


def known_tokens(cell: Cell) -> int | None:
    """The cell's imitation tokens: the budget, else what its finished data stage counted."""
    if cell.tokens is not None:
        return cell.tokens
    data = next((s for s in cell.stages if s.kind == "data"), None)
    try:
        with open(os.path.join(data.out_dir, "data.json"), encoding="utf-8") as f:
            return int(json.load(f)["tokens"])
    except (AttributeError, OSError, ValueError, KeyError, TypeError):
        return None


def render_plan(cells: list[Cell], commands: bool = True) -> str:
    """Readable plan of `cells` with each stage's status."""
    state = statuses(cells)
    lines = []
    for cell in cells:
        tokens = known_tokens(cell)
        train = "no training (evaluates the base)" if tokens == 0 else f"train on {tokens_text(tokens)} tokens"
        if cell.experiment_level:
            lines.append(f"cell {cell.name}: experiment-level, the style ceiling: {cell.base}'s second sample "
                         "scored against its reference replies")
        else:
            lines.append(f"cell {cell.name}: base {cell.base}, data {cell.data}, seed {cell.seed}; {train}")
        for s in cell.stages:
            lines.append(f"  {state[s.id]:<8} {s.name:<20} {s.fingerprint}")
            if commands:
                lines.append(f"           $ {C.shell_line(s.command)}")
    counts = collections.Counter(state.values())
    grid = [c for c in cells if not c.experiment_level]
    tokens = [known_tokens(c) for c in grid]
    trained = [t for t in tokens if t != 0]
    total = "?" if None in tokens else tokens_text(sum(trained))
    lines.append(f"{len(grid)} cells, {len(state)} stages: " + ", ".join(
        f"{counts.get(k, 0)} {k}" for k in ("done", "pending", "partial", "stale")) +
        f"; {len(trained)} cells train, {total} imitation tokens in all")
    return "\n".join(lines)
