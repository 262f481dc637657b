"""The results stage: one JSON per cell gathering its evaluations, what the report reads.

    python -m easylm_imitate.experiment.cell_results --cell=NAME --base_model=B --data=D --seed=0 \\
        --imitation_tokens=20000000 --data_manifest=CELL/data/data.json \\
        --result=style=CELL/eval_style/results.json ... --out=CELL/results/results.json
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from easylm_imitate.evaluation.results import read_results
from easylm_imitate.fileio import write_json_atomic

_CELL = flags.DEFINE_string("cell", None, "Cell name.", required=True)
_BASE = flags.DEFINE_string("base_model", None, "Base model name.", required=True)
_DATA = flags.DEFINE_string("data", None, "Imitation data name (none without imitation).", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the cell.")
_TOKENS = flags.DEFINE_float("imitation_tokens", None, "Nominal imitation tokens (the budget).")
_MANIFEST = flags.DEFINE_string("data_manifest", None, "data.json of the cell's data stage.")
_RESULTS = flags.DEFINE_multi_string("result", [], "NAME=PATH of one evaluation's results file (repeatable).")
_OUT = flags.DEFINE_string("out", None, "Where to write the cell's results JSON.", required=True)


def gather(results: list[str]) -> dict:
    """name -> {file, benchmark, status, n, metrics} of each NAME=PATH (read and validated)."""
    out = {}
    for item in results:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--result={item!r}: expected NAME=PATH")
        r = read_results(path)
        out[name] = {"file": os.path.abspath(path), "benchmark": r["benchmark"], "status": r.get("status", "ok"),
                     "n": r["n"], "metrics": r["metrics"], "stderr": r["stderr"]}
    return out


def main(argv) -> None:
    """Write the cell's results JSON; a missing or malformed results file is one `error:` line."""
    del argv
    try:
        manifest = None
        if _MANIFEST.value:
            with open(_MANIFEST.value, encoding="utf-8") as f:
                manifest = json.load(f)
        record = {"cell": _CELL.value, "base_model": _BASE.value, "data": _DATA.value, "seed": _SEED.value,
                  "imitation_tokens": _TOKENS.value,
                  "tokens_trained_on": manifest.get("tokens") if manifest else 0,
                  "data_manifest": os.path.abspath(_MANIFEST.value) if _MANIFEST.value else None,
                  "evaluations": gather(_RESULTS.value)}
        write_json_atomic(_OUT.value, record)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    app.run(main)
