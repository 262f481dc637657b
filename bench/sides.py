"""Running one side of a benchmark in its own fresh process: the benchmark script re-runs
itself with `--side NAME`, and that child prints its measurements as JSON on its last line."""

from __future__ import annotations

import json
import subprocess
import sys


def run_side(script: str, argv: list[str], side: str) -> dict:
    """Run `python script *argv --side side` and return the JSON its last stdout line holds."""
    out = subprocess.run([sys.executable, script, *argv, "--side", side], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])
