"""Who rates what: each item gets exactly R ratings from distinct raters.

A rater holds at most one open assignment. An open assignment reserves a slot on its item
for `lease_s` seconds; after that the slot may go to another rater. A submit on an item that
already has R ratings is refused (the rater simply gets another item), so an item never
collects more than R ratings. Submitting the same assignment twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import secrets
import sqlite3
import time

from easylm_imitate.evaluation.rating import store
from easylm_imitate.evaluation.rating.pairs import Item

CHOICES = ("A", "B", "equal")
DEFAULT_LEASE_S = 30 * 60


@dataclasses.dataclass(frozen=True)
class Assignment:
    """An item shown to one rater, with the side (A or B) the model's output is on."""

    id: int
    item: Item
    a_is_model: bool
    choice: str | None

    @property
    def output_a(self) -> str:
        """The text shown as A."""
        return self.item.model_output if self.a_is_model else self.item.reference_output

    @property
    def output_b(self) -> str:
        """The text shown as B."""
        return self.item.reference_output if self.a_is_model else self.item.model_output


def outcome(choice: str, a_is_model: bool) -> str:
    """The model's result against the reference for a rater's choice: win, tie or loss."""
    if choice == "equal":
        return "tie"
    model_side = "A" if a_is_model else "B"
    return "win" if choice == model_side else "loss"


def _submitted_count(conn: sqlite3.Connection, item_id: str) -> int:
    return conn.execute("SELECT COUNT(*) FROM assignments WHERE item_id = ? AND submitted_at IS NOT NULL",
                        (item_id,)).fetchone()[0]


def _load(conn: sqlite3.Connection, row: sqlite3.Row) -> Assignment:
    return Assignment(row["id"], store.get_item(conn, row["item_id"]), bool(row["a_is_model"]), row["choice"])


def get_assignment(conn: sqlite3.Connection, rater_id: int, assignment_id: int) -> Assignment | None:
    """The rater's own assignment with this id; None if it does not exist or is another's."""
    row = conn.execute("SELECT * FROM assignments WHERE id = ? AND rater_id = ?",
                       (assignment_id, rater_id)).fetchone()
    return _load(conn, row) if row else None


def next_assignment(conn: sqlite3.Connection, rater_id: int, study: store.Study,
                    now: float | None = None, lease_s: float = DEFAULT_LEASE_S) -> Assignment | None:
    """The rater's open assignment, or a new one on an item that still needs ratings; None when
    nothing is left for this rater. Items closest to completion are handed out first."""
    now = time.time() if now is None else now
    with store.write_txn(conn):
        for row in conn.execute("SELECT * FROM assignments WHERE rater_id = ? AND submitted_at IS NULL",
                                (rater_id,)).fetchall():
            if _submitted_count(conn, row["item_id"]) >= study.ratings_per_item:
                conn.execute("DELETE FROM assignments WHERE id = ?", (row["id"],))  # lost its slot
            else:
                conn.execute("UPDATE assignments SET assigned_at = ? WHERE id = ?", (now, row["id"]))
                return _load(conn, row)
        row = conn.execute(
            """SELECT i.id, (SELECT COUNT(*) FROM assignments a WHERE a.item_id = i.id
                             AND (a.submitted_at IS NOT NULL OR a.assigned_at > ?)) AS used
               FROM items i
               WHERE NOT EXISTS (SELECT 1 FROM assignments a WHERE a.item_id = i.id AND a.rater_id = ?)
                 AND used < ?
               ORDER BY used DESC, i.seq LIMIT 1""",
            (now - lease_s, rater_id, study.ratings_per_item)).fetchone()
        if row is None:
            return None
        cur = conn.execute(
            "INSERT INTO assignments (rater_id, item_id, a_is_model, assigned_at, shown_at) VALUES (?, ?, ?, ?, ?)",
            (rater_id, row["id"], secrets.randbelow(2), now, now))
        return _load(conn, conn.execute("SELECT * FROM assignments WHERE id = ?", (cur.lastrowid,)).fetchone())


def submit(conn: sqlite3.Connection, rater_id: int, assignment_id: int, choice: str, study: store.Study,
           now: float | None = None) -> str:
    """Record a choice; returns "recorded", "already" (a repeat: nothing changes) or "full" (the
    item got its R ratings meanwhile: this one is dropped). KeyError if the assignment is not
    this rater's; ValueError for an unknown choice."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
    now = time.time() if now is None else now
    with store.write_txn(conn):
        row = conn.execute("SELECT * FROM assignments WHERE id = ? AND rater_id = ?",
                           (assignment_id, rater_id)).fetchone()
        if row is None:
            raise KeyError(assignment_id)
        if row["submitted_at"] is not None:
            return "already"
        if _submitted_count(conn, row["item_id"]) >= study.ratings_per_item:
            conn.execute("DELETE FROM assignments WHERE id = ?", (assignment_id,))
            return "full"
        conn.execute("UPDATE assignments SET submitted_at = ?, choice = ? WHERE id = ?",
                     (now, choice, assignment_id))
        return "recorded"


def progress(conn: sqlite3.Connection, rater_id: int, study: store.Study) -> tuple[int, int]:
    """(items this rater has rated, items still open to this rater)."""
    done = conn.execute("SELECT COUNT(*) FROM assignments WHERE rater_id = ? AND submitted_at IS NOT NULL",
                        (rater_id,)).fetchone()[0]
    left = conn.execute(
        """SELECT COUNT(*) FROM items i
           WHERE NOT EXISTS (SELECT 1 FROM assignments a WHERE a.item_id = i.id
                             AND a.rater_id = ? AND a.submitted_at IS NOT NULL)
             AND (SELECT COUNT(*) FROM assignments a WHERE a.item_id = i.id
                  AND a.submitted_at IS NOT NULL) < ?""",
        (rater_id, study.ratings_per_item)).fetchone()[0]
    return done, left
