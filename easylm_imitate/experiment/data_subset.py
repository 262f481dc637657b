"""The data stage: check a cell's imitation subset and write what it holds (data.json).

    python -m easylm_imitate.experiment.data_subset --file=BUILD/train_20M.jsonl \\
        --report=BUILD/report.json --budget=20M --out=CELL/data/data.json

With --report/--budget (a nested budget written by `easylm_imitate.data.build`) the token
count is the build's and a budget larger than the data is an error. Without, the file is any
canonical JSONL (e.g. NQ-synthetic) and tokens are an approximate count.
"""

from __future__ import annotations

import hashlib
import json

from absl import app, flags

from easylm_imitate.data.schema import RecordError, validate_record
from easylm_imitate.data.templates import approx_token_count
from easylm_imitate.fileio import LineError, iter_jsonl, write_json_atomic

_FILE = flags.DEFINE_string("file", None, "Canonical conversation JSONL the cell trains on.", required=True)
_REPORT = flags.DEFINE_string("report", None, "report.json of the build that wrote --file.")
_BUDGET = flags.DEFINE_string("budget", None, "Budget label in the report (e.g. 20M).")
_OUT = flags.DEFINE_string("out", None, "Where to write data.json.", required=True)


def budget_entry(report_path: str, label: str) -> dict:
    """The report's entry for budget `label`; ValueError when absent or larger than the data."""
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    entry = next((b for b in report.get("budgets", []) if b["label"] == label), None)
    if entry is None:
        have = ", ".join(b["label"] for b in report.get("budgets", [])) or "none"
        raise ValueError(f"{report_path}: no budget {label} (the build wrote: {have}); rebuild with "
                         f"--token_budgets including {label}")
    if entry.get("exceeds_available"):
        raise ValueError(f"{report_path}: budget {label} exceeds the data available ({entry['tokens']} tokens)")
    return entry


def describe(path: str, entry: dict | None) -> dict:
    """Records, tokens and content hash of `path`; LineError on a record that is not canonical."""
    h, records, approx = hashlib.sha256(), 0, 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    for line, obj in iter_jsonl(path):
        if isinstance(obj, LineError):
            raise obj
        try:
            validate_record(obj)
        except RecordError as e:
            raise LineError(path, line, str(e)) from None
        records += 1
        approx += sum(approx_token_count(t["text"]) for t in obj["turns"])
    out = {"file": path, "sha256": h.hexdigest(), "records": records}
    if entry is not None:
        out.update(tokens=entry["tokens"], tokens_counted_by="build report", budget=entry["label"])
    else:
        out.update(tokens=approx, tokens_counted_by="approximate (words and punctuation)")
    if records == 0:
        raise ValueError(f"{path}: no training records")
    return out


def main(argv) -> None:
    """Write data.json for --file; bad input is one `error:` line, exit 1."""
    del argv
    try:
        entry = budget_entry(_REPORT.value, _BUDGET.value) if _REPORT.value else None
        write_json_atomic(_OUT.value, describe(_FILE.value, entry))
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    app.run(main)
