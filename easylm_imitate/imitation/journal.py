"""A durable record of every chat request and its outcome: sqlite in WAL mode, synchronous=FULL.

A success is committed (and fsync'd) before the client counts it, so after a crash, kill -9 or
Ctrl-C a rerun finds it and never sends that request again. Failures are recorded too (last
error and attempt count, for diagnosis) but do not stop a rerun from trying again.

A request in flight is *claimed*: a lease row (key, owner, expiry) taken in one write
transaction, so of several processes sharing a journal only one sends each request. The owner
renews its leases while it works and drops them when done. A lease whose expiry has passed, or
whose owner is a process of this host that no longer exists, is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, request TEXT NOT NULL, texts TEXT NOT NULL,
    usage TEXT NOT NULL, finish_reasons TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, request TEXT NOT NULL, error TEXT NOT NULL,
    attempts INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
"""

CLAIMED, BUSY, DONE = "claimed", "busy", "done"


def owner_id() -> str:
    """A claim owner name unique to this call: `host:pid:random`."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_alive(owner: str) -> bool:
    """False only when `owner` names a process of this host that no longer exists.

    Owners on other hosts cannot be checked (their leases end by expiry), nor can a recycled pid
    be told from the original (it just waits for the lease to expire).
    """
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname():
        return True
    try:
        pid = int(parts[1])
    except ValueError:
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    return True


class Journal:
    """Successful and failed chat requests keyed by request hash; `path=None` keeps it in memory."""

    def __init__(self, path: str | os.PathLike | None):
        """Open (or create) the journal at `path`."""
        self.path = None if path is None else os.fspath(path)
        if self.path is not None:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            if os.path.isdir(self.path):
                raise IsADirectoryError(f"journal path {self.path} is a directory; pass a file path")
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path or ":memory:", check_same_thread=False, isolation_level=None,
                                       timeout=30.0)
            if self.path is not None:
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise sqlite3.OperationalError(f"could not switch to WAL mode (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise RuntimeError(f"{self.path}: not a usable journal ({e})") from e

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        """key -> {"request", "texts", "usage", "finish_reasons"} for the keys already answered."""
        keys = list(dict.fromkeys(keys))
        found = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = self._db.execute(
                    f"SELECT key, request, texts, usage, finish_reasons FROM responses WHERE key IN "
                    f"({','.join('?' * len(chunk))})", chunk).fetchall()
                for key, request, texts, usage, finish in rows:
                    found[key] = {"request": json.loads(request), "texts": json.loads(texts),
                                  "usage": json.loads(usage), "finish_reasons": json.loads(finish)}
        return found

    def put_success(self, key: str, model: str, request: dict, texts: list[str], usage: dict,
                    finish_reasons: list[str | None]) -> None:
        """Durably record a successful response (committed when this returns)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, model, _dumps(request), _dumps(texts), _dumps(usage), _dumps(finish_reasons), time.time()))
            self._db.execute("DELETE FROM failures WHERE key = ?", (key,))
            self._db.execute("DELETE FROM claims WHERE key = ?", (key,))

    def put_failure(self, key: str, model: str, request: dict, error: str, attempts: int) -> None:
        """Record that a request failed after `attempts` tries (a rerun tries it again)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                             (key, model, _dumps(request), error, attempts, time.time()))

    def claim(self, key: str, owner: str, lease_seconds: float) -> str:
        """Try to become the one process that sends request `key`; atomic across processes.

        Returns "done" when the journal already holds its answer, "busy" when another live owner
        holds an unexpired lease on it, else "claimed": `owner` now holds (or renews) a lease
        that expires `lease_seconds` from now.
        """
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if self._db.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone():
                return DONE
            row = self._db.execute("SELECT owner, expires FROM claims WHERE key = ?", (key,)).fetchone()
            now = time.time()
            if row is not None and row[0] != owner and row[1] > now and owner_alive(row[0]):
                return BUSY
            self._db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (key, owner, now + lease_seconds))
            return CLAIMED

    def renew(self, owner: str, lease_seconds: float) -> int:
        """Extend every lease `owner` holds to `lease_seconds` from now; returns how many."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            return self._db.execute("UPDATE claims SET expires = ? WHERE owner = ?",
                                    (time.time() + lease_seconds, owner)).rowcount

    def release(self, key: str | None, owner: str) -> None:
        """Drop `owner`'s lease on `key` (None: all of its leases); others' leases are untouched."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if key is None:
                self._db.execute("DELETE FROM claims WHERE owner = ?", (owner,))
            else:
                self._db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner))

    def successes(self) -> Iterator[tuple[str, dict]]:
        """(key, entry) for every recorded success, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, request, texts, usage, finish_reasons FROM responses ORDER BY created").fetchall()
        for key, request, texts, usage, finish in rows:
            yield key, {"request": json.loads(request), "texts": json.loads(texts), "usage": json.loads(usage),
                        "finish_reasons": json.loads(finish)}

    def failures(self) -> list[dict]:
        """Every request whose last try failed: key, request, error, attempts."""
        with self._lock:
            rows = self._db.execute("SELECT key, request, error, attempts FROM failures ORDER BY updated").fetchall()
        return [{"key": k, "request": json.loads(r), "error": e, "attempts": a} for k, r, e, a in rows]

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)
