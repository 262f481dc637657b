"""Progress lines: printed and appended to DIR/experiment.log, each with the time."""

from __future__ import annotations

import os
import sys
import time


class ProgressLog:
    """Prints `[HH:MM:SS] message` to stdout and appends it to `log_path` (when given)."""

    def __init__(self, log_path: str | None, stream=None):
        self.log_path = log_path
        self.stream = stream or sys.stdout
        if log_path:
            os.makedirs(os.path.dirname(log_path), exist_ok=True)

    def __call__(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, file=self.stream, flush=True)
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(time.strftime("%Y-%m-%d ") + line + "\n")


def bar(done: int, total: int, width: int = 20) -> str:
    """`[#####.....] 5/10`."""
    filled = int(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
