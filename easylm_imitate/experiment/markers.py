"""Stage markers: `<stage>.started.json` and `<stage>.done.json` beside the stage's directory.

`begin` is called before a stage runs: when the stage's outputs were made with other
settings (a started or done marker with another fingerprint) the directory is removed, so a
stale training run never resumes from the old checkpoints; a half-finished run with the same
fingerprint is kept (the trainer resumes it). `end` writes the done marker, atomically,
after the stage's command succeeded. Both are also a command, so a printed stage line is
`begin && <binary> && end`:

    python -m easylm_imitate.experiment.markers begin --stage_dir=DIR --fingerprint=FP
    python -m easylm_imitate.experiment.markers end --stage_dir=DIR --fingerprint=FP --kind=train
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from easylm_imitate.fileio import write_json_atomic

DONE, PENDING, STALE, PARTIAL = "done", "pending", "stale", "partial"


def marker_path(stage_dir: str, which: str) -> str:
    """`<stage_dir>.<which>.json` (which: started | done)."""
    return f"{os.path.normpath(stage_dir)}.{which}.json"


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def status(stage_dir: str, fingerprint: str) -> str:
    """done (finished with this fingerprint), stale (finished or begun with another),
    partial (begun with this fingerprint, not finished: resumes) or pending."""
    done = _read(marker_path(stage_dir, "done"))
    if done is not None:
        return DONE if done.get("fingerprint") == fingerprint else STALE
    started = _read(marker_path(stage_dir, "started"))
    if started is not None:
        return PARTIAL if started.get("fingerprint") == fingerprint else STALE
    return PENDING


def done_record(stage_dir: str) -> dict | None:
    """The done marker's contents (fingerprint, finished, seconds, summary), or None."""
    return _read(marker_path(stage_dir, "done"))


def begin(stage_dir: str, fingerprint: str) -> bool:
    """Prepare `stage_dir` for a run with `fingerprint`; True when earlier outputs were removed."""
    state = status(stage_dir, fingerprint)
    wiped = False
    if state in (STALE, DONE) and os.path.exists(marker_path(stage_dir, "done")):
        os.remove(marker_path(stage_dir, "done"))
    if state == STALE and os.path.isdir(stage_dir):
        shutil.rmtree(stage_dir)
        wiped = True
    os.makedirs(stage_dir, exist_ok=True)
    write_json_atomic(marker_path(stage_dir, "started"), {"fingerprint": fingerprint, "started": time.time()})
    return wiped


def end(stage_dir: str, fingerprint: str, summary: dict, seconds: float | None = None) -> None:
    """Mark the stage done with `fingerprint` and its key numbers."""
    write_json_atomic(marker_path(stage_dir, "done"), {"fingerprint": fingerprint, "finished": time.time(),
                                                       "seconds": seconds, "summary": summary})


def main(argv: list[str] | None = None) -> int:
    """`markers begin|end --stage_dir=DIR --fingerprint=FP [--kind=KIND]`."""
    import argparse

    from easylm_imitate.experiment.summaries import summarize

    p = argparse.ArgumentParser(prog="python -m easylm_imitate.experiment.markers", description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["begin", "end"])
    p.add_argument("--stage_dir", required=True)
    p.add_argument("--fingerprint", required=True)
    p.add_argument("--kind", default="", help="Stage kind (train, data, results, an evaluation): picks the summary.")
    args = p.parse_args(argv)
    if args.action == "begin":
        begin(args.stage_dir, args.fingerprint)
    else:
        end(args.stage_dir, args.fingerprint, summarize(args.kind, args.stage_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
