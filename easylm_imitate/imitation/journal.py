"""A durable record of every chat request and its outcome: sqlite in WAL mode, synchronous=FULL.

A success is committed (and fsync'd) before the client counts it, so after a crash, kill -9 or
Ctrl-C a rerun finds it and never sends that request again. Failures are recorded too (last
error and attempt count, for diagnosis) but do not stop a rerun from trying again.

A request in flight is *claimed*: a lease row (key, owner, expiry) taken in one write
transaction, so of several processes sharing a journal only one sends each request. The owner
renews its leases while it works and drops them when done. A lease whose expiry has passed, or
whose owner is a process of this host that no longer exists, is taken over.

Batch jobs (`--batch_api`) are journaled too: the intent (state "uploading" with its request
keys) before the upload, then the input file id, "creating" before the batch is created, the batch
id once it is, and the output/error file ids once it ends, so a rerun re-attaches to the job.
`charges` holds costs that may have been billed without an answer reaching us (timeouts).
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

from easylm_imitate.sqlite_retry import retry_while_locked

_OPEN_TIMEOUT_S = 30.0  # how long opening waits on other processes holding the journal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, request TEXT NOT NULL, texts TEXT NOT NULL,
    usage TEXT NOT NULL, finish_reasons TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, request TEXT NOT NULL, error TEXT NOT NULL,
    attempts INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS batch_jobs (
    job INTEGER PRIMARY KEY, tag TEXT NOT NULL, state TEXT NOT NULL, keys TEXT NOT NULL,
    input_file_id TEXT, batch_id TEXT, output_file_id TEXT, error_file_id TEXT, worst_cost REAL NOT NULL,
    updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, cost REAL NOT NULL, reason TEXT NOT NULL, created REAL NOT NULL);
"""
# Columns added after the first release; an older journal gets them on open (NULL: none / live).
_ADDED_COLUMNS = (("responses", "logprobs", "TEXT"), ("responses", "channel", "TEXT"))
_JOB_FIELDS = ("job", "tag", "state", "keys", "input_file_id", "batch_id", "output_file_id", "error_file_id",
               "worst_cost")

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
                                       timeout=_OPEN_TIMEOUT_S)
            retry_while_locked(self._set_up, _OPEN_TIMEOUT_S)
        except sqlite3.DatabaseError as e:
            raise RuntimeError(f"{self.path}: not a usable journal ({e})") from e

    def _set_up(self) -> None:
        """WAL mode, full sync, the schema, and any columns an older journal lacks (idempotent)."""
        if self.path is not None:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"could not switch to WAL mode (got {mode})")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        for table, column, kind in _ADDED_COLUMNS:
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                try:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as e:  # another process added it first
                    if "duplicate column" not in str(e):
                        raise

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        """key -> {"request", "texts", "usage", "finish_reasons", "logprobs", "channel"} for the keys
        already answered (logprobs: one entry per choice, or None when not asked for)."""
        keys = list(dict.fromkeys(keys))
        found = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = self._db.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM responses WHERE key IN "
                    f"({','.join('?' * len(chunk))})", chunk).fetchall()
                for row in rows:
                    found[row[0]] = _entry(row)
        return found

    def put_success(self, key: str, model: str, request: dict, texts: list[str], usage: dict,
                    finish_reasons: list[str | None], logprobs: list | None = None, channel: str = "live") -> None:
        """Durably record a successful response (committed when this returns).

        logprobs: per choice, the `choices[i].logprobs.content` list (None: not asked for);
        channel: "live" or "batch" (what the usage was billed at).
        """
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, model, request, texts, usage, finish_reasons, created, "
                "logprobs, channel) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, _dumps(request), _dumps(texts), _dumps(usage), _dumps(finish_reasons), time.time(),
                 None if logprobs is None else json.dumps(logprobs, ensure_ascii=False), channel))  # keeps key order
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
            rows = self._db.execute(f"SELECT {_ENTRY_COLUMNS} FROM responses ORDER BY created").fetchall()
        for row in rows:
            yield row[0], _entry(row)

    def failures(self) -> list[dict]:
        """Every request whose last try failed: key, request, error, attempts."""
        with self._lock:
            rows = self._db.execute("SELECT key, request, error, attempts FROM failures ORDER BY updated").fetchall()
        return [{"key": k, "request": json.loads(r), "error": e, "attempts": a} for k, r, e, a in rows]

    def add_charge(self, key: str, cost: float, reason: str) -> None:
        """Durably record `cost` (USD) that may have been billed for `key` without an answer reaching us
        (a timeout or a dropped connection after the server may have done the work)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO charges (key, cost, reason, created) VALUES (?, ?, ?, ?)",
                             (key, cost, reason, time.time()))

    def charged(self) -> float:
        """The sum of every `add_charge` cost."""
        with self._lock:
            return float(self._db.execute("SELECT COALESCE(SUM(cost), 0) FROM charges").fetchone()[0])

    def usage_by_channel(self) -> dict[str, dict[str, int]]:
        """channel -> {"prompt_tokens", "completion_tokens"} summed over every recorded success."""
        with self._lock:
            rows = self._db.execute("SELECT channel, usage FROM responses").fetchall()
        out: dict[str, dict[str, int]] = {}
        for channel, usage in rows:
            u, total = json.loads(usage), out.setdefault(channel or "live", {"prompt_tokens": 0, "completion_tokens": 0})
            total["prompt_tokens"] += int(u.get("prompt_tokens", 0))
            total["completion_tokens"] += int(u.get("completion_tokens", 0))
        return out

    # ---- batch jobs (see imitation/batch_api.py) ---------------------------------------------------
    def new_batch_job(self, tag: str, keys: list[str], worst_cost: float) -> int:
        """Record the intent to submit a batch of `keys` (state "uploading") before any call; returns its number."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            return self._db.execute(
                "INSERT INTO batch_jobs (tag, state, keys, worst_cost, updated) VALUES (?, 'uploading', ?, ?, ?)",
                (tag, _dumps(keys), worst_cost, time.time())).lastrowid

    def update_batch_job(self, job: int, **fields) -> None:
        """Set `fields` (state, input_file_id, batch_id, output_file_id, error_file_id) of batch job `job`."""
        bad = set(fields) - set(_JOB_FIELDS[2:])
        if bad:
            raise ValueError(f"unknown batch job field(s) {sorted(bad)}")
        names = sorted(fields)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(f"UPDATE batch_jobs SET {', '.join(f'{n} = ?' for n in names)}, updated = ? WHERE job = ?",
                             [fields[n] for n in names] + [time.time(), job])

    def batch_jobs(self, open_only: bool = True) -> list[dict]:
        """Batch jobs in submission order (open_only: those not yet "done"); keys decoded."""
        where = " WHERE state != 'done'" if open_only else ""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_JOB_FIELDS)} FROM batch_jobs{where} ORDER BY job").fetchall()
        jobs = [dict(zip(_JOB_FIELDS, row)) for row in rows]
        for job in jobs:
            job["keys"] = json.loads(job["keys"])
        return jobs

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


_ENTRY_COLUMNS = "key, request, texts, usage, finish_reasons, logprobs, channel"


def _entry(row) -> dict:
    """A responses row (selected as _ENTRY_COLUMNS) as the dict `get_many` returns."""
    _, request, texts, usage, finish, logprobs, channel = row
    return {"request": json.loads(request), "texts": json.loads(texts), "usage": json.loads(usage),
            "finish_reasons": json.loads(finish), "logprobs": None if logprobs is None else json.loads(logprobs),
            "channel": channel or "live"}


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)
