"""Shared helpers for the rating tests: pairs files, a real server subprocess, a headless chromium."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RATE = os.path.join(REPO, "eval", "rate.py")
ADMIN = "admin-secret-for-tests"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def write_pairs(path, records) -> str:
    """Write records (dicts, or raw strings for bad lines) as a JSONL pairs file."""
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rate_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python eval/rate.py ARGS` and return the finished process."""
    proc = subprocess.run([sys.executable, RATE, *args], capture_output=True, text=True, timeout=120, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"rate.py {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@contextlib.contextmanager
def server(db: str, *extra: str):
    """Run `eval/rate.py serve` on a free port; yields (base_url, process); killed on exit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, RATE, "serve", f"--db={db}", f"--port={port}",
                             f"--admin_token={ADMIN}", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{proc.stdout.read()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            if time.time() > deadline:
                raise AssertionError("server did not start within 60 s")
            time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


def assignment_id(html: str) -> int:
    """The assignment id in a rater page's form."""
    return int(re.search(r'name="assignment" value="(\d+)"', html).group(1))


@contextlib.contextmanager
def chromium():
    """A headless Debian chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    path = shutil.which("chromium")
    assert path, "Debian chromium is not installed: run `make browser`"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
