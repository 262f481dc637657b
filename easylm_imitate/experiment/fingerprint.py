"""Fingerprints: short hashes of a stage's settings, its upstream stages and its input files.

A stage is done when its done-marker holds the fingerprint the plan computes now; any change
of a setting, of an upstream fingerprint or of an input file's content changes it. File
contents are hashed once per (path, size, mtime) and remembered in a cache file, so a plan
stays cheap and a rebuilt but byte-identical input leaves every stage done.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from easylm_imitate.fileio import write_json_atomic

MISSING = "missing"


def digest(obj: Any) -> str:
    """16-hex-digit SHA-256 of `obj` as canonical JSON (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class ContentHashes:
    """Content digests of files and directories, cached in `cache_path` by (path, size, mtime)."""

    def __init__(self, cache_path: str | None):
        self.cache_path = cache_path
        self._cache: dict[str, list] = {}
        self._dirty = False
        if cache_path and os.path.isfile(cache_path):
            try:
                with open(cache_path, encoding="utf-8") as f:
                    self._cache = json.load(f)
            except (OSError, ValueError):
                self._cache = {}  # a damaged cache only costs re-hashing

    def file(self, path: str) -> str:
        """Digest of a file's bytes, or MISSING when there is no such file."""
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError:
            return MISSING
        key = [st.st_size, st.st_mtime_ns]
        hit = self._cache.get(path)
        if hit and hit[:2] == key:
            return hit[2]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        value = h.hexdigest()[:16]
        self._cache[path] = key + [value]
        self._dirty = True
        return value

    def directory(self, path: str) -> str:
        """Digest of a checkpoint-like directory: every file's relative path and size, plus the
        bytes of its small JSON files (meta, config); MISSING when there is no such directory."""
        path = os.path.abspath(path)
        if not os.path.isdir(path):
            return MISSING
        entries = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, path)
                size = os.path.getsize(full)
                entries.append([rel, size, self.file(full) if name.endswith(".json") and size < 1 << 20 else None])
        return digest(entries)

    def save(self) -> None:
        """Write the cache back if anything new was hashed."""
        if self.cache_path and self._dirty:
            os.makedirs(os.path.dirname(self.cache_path), exist_ok=True)
            write_json_atomic(self.cache_path, self._cache, indent=None)
            self._dirty = False
