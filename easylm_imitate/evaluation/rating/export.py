"""Every submitted rating as CSV, one row per rating."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import sqlite3

from easylm_imitate.evaluation.rating import aggregate, store
from easylm_imitate.fileio import atomic_open

COLUMNS = ("item_id", "rater", "choice", "model_shown_as", "outcome", "seconds", "submitted_at",
           "model", "reference")


def ratings_csv(conn: sqlite3.Connection) -> str:
    """The CSV text: item_id, rater, choice (A/B/equal), model_shown_as, outcome (win/tie/loss
    for the model), seconds spent, submitted_at (ISO, UTC), model, reference."""
    study = store.read_study(conn)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in aggregate.load_ratings(conn):
        when = dt.datetime.fromtimestamp(r.submitted_at, dt.timezone.utc).isoformat(timespec="seconds")
        writer.writerow((r.item_id, r.rater_id, r.choice, "A" if r.a_is_model else "B", r.outcome,
                         f"{r.seconds:.1f}", when, study.model, study.reference))
    return buf.getvalue()


def write_ratings_csv(conn: sqlite3.Connection, path: str | os.PathLike) -> int:
    """Write the CSV to `path` atomically; returns the number of ratings."""
    text = ratings_csv(conn)
    with atomic_open(path) as f:
        f.write(text)
    return text.count("\n") - 1
