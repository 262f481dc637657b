"""Opening a shared sqlite database when several processes open it at the same moment."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry_while_locked(step: Callable[[], T], timeout_s: float) -> T:
    """Run `step`, retrying for up to `timeout_s` seconds while another process holds the lock.

    sqlite does not call its busy handler for every lock it takes while a database is being set
    up: switching to WAL, or a reader upgrading to writer, can fail at once with "database is
    locked" when several processes open one new database together. `step` must be idempotent
    (CREATE ... IF NOT EXISTS, PRAGMAs)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            return step()
        except sqlite3.OperationalError as e:
            transient = "locked" in str(e) or "busy" in str(e)
            if not transient or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
