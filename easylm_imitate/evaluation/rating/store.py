"""The study database: one sqlite file in WAL mode holding items, raters and assignments.

Every rating is committed (synchronous=FULL) before the rater sees the next page, so killing
the server loses nothing that a rater was told was saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator

from easylm_imitate.evaluation.rating.pairs import Item
from easylm_imitate.sqlite_retry import retry_while_locked

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
  id TEXT PRIMARY KEY, seq INTEGER NOT NULL, prompt TEXT NOT NULL,
  model_output TEXT NOT NULL, reference_output TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raters (
  id INTEGER PRIMARY KEY, token TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
  id INTEGER PRIMARY KEY, rater_id INTEGER NOT NULL REFERENCES raters(id),
  item_id TEXT NOT NULL REFERENCES items(id), a_is_model INTEGER NOT NULL,
  assigned_at REAL NOT NULL, shown_at REAL NOT NULL, submitted_at REAL, choice TEXT,
  UNIQUE (rater_id, item_id));
CREATE INDEX IF NOT EXISTS assignments_item ON assignments (item_id);
"""

ADMIN_TOKEN_ENV = "EASYLM_RATING_ADMIN_TOKEN"


class StudyError(ValueError):
    """A database that holds no study, or a flag that contradicts the stored study."""


@dataclasses.dataclass(frozen=True)
class Study:
    """The fixed settings of a study, stored in the database when it is created."""

    reference: str
    model: str
    ratings_per_item: int


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    """Open (creating if needed) the study database in WAL mode with durable commits."""
    conn = sqlite3.connect(os.fspath(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row

    def set_up():
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(SCHEMA)

    retry_while_locked(set_up, timeout_s=30)
    return conn


@contextlib.contextmanager
def write_txn(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction taken up front (BEGIN IMMEDIATE), so check-then-write is atomic."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row["value"] if row else None


def read_study(conn: sqlite3.Connection) -> Study:
    """The study stored in the database; StudyError if none was created yet."""
    reference, model, r = (_meta(conn, k) for k in ("reference", "model", "ratings_per_item"))
    if reference is None or model is None or r is None:
        raise StudyError("the database holds no study yet: load a pairs file first "
                         "(serve or invite with --pairs and --reference)")
    return Study(reference, model, int(r))


def init_study(conn: sqlite3.Connection, reference: str | None, model: str | None,
               ratings_per_item: int | None) -> Study:
    """Create the study, or check that the given settings agree with the stored one."""
    with write_txn(conn):
        stored = {k: _meta(conn, k) for k in ("reference", "model", "ratings_per_item")}
        given = {"reference": reference, "model": model,
                 "ratings_per_item": None if ratings_per_item is None else str(ratings_per_item)}
        if stored["reference"] is None:
            if not reference or not model:
                raise StudyError("a new study needs the reference system (--reference) and a model")
            if ratings_per_item is None or ratings_per_item < 1:
                raise StudyError(f"ratings per item must be >= 1, got {ratings_per_item}")
            for key, value in given.items():
                conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)", (str(time.time()),))
        else:
            for key, value in given.items():
                if value is not None and value != stored[key]:
                    raise StudyError(f"the database's study has {key}={stored[key]!r}; got {value!r}")
    return read_study(conn)


def add_items(conn: sqlite3.Connection, items: Iterable[Item]) -> tuple[int, list[tuple[Item, str]]]:
    """Insert new items; an id already stored with the same text is skipped silently.

    Returns (number added, [(item, reason)] for ids already stored with different text).
    """
    added, conflicts = 0, []
    with write_txn(conn):
        seq = conn.execute("SELECT COALESCE(MAX(seq), -1) FROM items").fetchone()[0]
        for item in items:
            row = conn.execute("SELECT prompt, model_output, reference_output FROM items WHERE id = ?",
                               (item.id,)).fetchone()
            if row is None:
                seq += 1
                conn.execute("INSERT INTO items VALUES (?, ?, ?, ?, ?)",
                             (item.id, seq, item.prompt, item.model_output, item.reference_output))
                added += 1
            elif tuple(row) != (item.prompt, item.model_output, item.reference_output):
                conflicts.append((item, f"id {item.id!r} is already in the study with different text"))
    return added, conflicts


def get_item(conn: sqlite3.Connection, item_id: str) -> Item:
    """The stored item with this id."""
    row = conn.execute("SELECT id, prompt, model_output, reference_output FROM items WHERE id = ?",
                       (item_id,)).fetchone()
    return Item(*row)


def count_items(conn: sqlite3.Connection) -> int:
    """Number of items in the study."""
    return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]


def create_raters(conn: sqlite3.Connection, n: int) -> list[str]:
    """Create `n` raters with fresh secret tokens; returns the tokens."""
    tokens = [secrets.token_urlsafe(18) for _ in range(n)]
    with write_txn(conn):
        for token in tokens:
            conn.execute("INSERT INTO raters (token, created_at) VALUES (?, ?)", (token, time.time()))
    return tokens


def rater_id_for(conn: sqlite3.Connection, token: str) -> int | None:
    """The id of the rater holding `token`, or None."""
    row = conn.execute("SELECT id FROM raters WHERE token = ?", (token,)).fetchone()
    return row["id"] if row else None


def admin_token(conn: sqlite3.Connection, given: str | None = None) -> tuple[str, bool]:
    """(token, generated): `given`, else $EASYLM_RATING_ADMIN_TOKEN, else the stored one, else a
    new one stored in the database (generated=True only then)."""
    token = given or os.environ.get(ADMIN_TOKEN_ENV)
    if token:
        return token, False
    with write_txn(conn):
        stored = _meta(conn, "admin_token")
        if stored:
            return stored, False
        token = secrets.token_urlsafe(24)
        conn.execute("INSERT INTO meta (key, value) VALUES ('admin_token', ?)", (token,))
    return token, True
