"""Background batching: requests that arrive within a few milliseconds run as one batch.

Each job is a list of generation rows (`GenRequest`) or a list of sequences to score. One
worker thread owns the model: it waits for a job, keeps collecting for `wait_ms` (or until
`max_batch` rows), runs all generation rows as one sampler batch (sampling parameters are
per row, so requests with different settings share it) and all scoring rows per `top`, then
resolves each job's future with its share of the results.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time

from easylm_imitate.inference.engine import Engine, GenRequest

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Job:
    kind: str  # 'generate' | 'score'
    rows: list
    top: int
    future: concurrent.futures.Future


class Batcher:
    """Serialises model work onto one thread and merges concurrent requests into batches."""

    def __init__(self, engine: Engine, *, max_batch: int = 16, wait_ms: float = 5.0):
        self.engine = engine
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.batches_run = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._pending: _Job | None = None
        self._thread = threading.Thread(target=self._loop, name="easylm-batcher", daemon=True)
        self._thread.start()

    def generate(self, rows: list[GenRequest]) -> concurrent.futures.Future:
        """Queue generation rows; the future resolves to their `GenResult`s in order."""
        return self._submit(_Job("generate", rows, 0, concurrent.futures.Future()))

    def score(self, sequences: list[list[int]], top: int = 0) -> concurrent.futures.Future:
        """Queue token sequences to score; the future resolves to their `SequenceScores`."""
        return self._submit(_Job("score", sequences, top, concurrent.futures.Future()))

    def close(self) -> None:
        """Stop the worker after the jobs already queued."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _submit(self, job: _Job) -> concurrent.futures.Future:
        self._queue.put(job)
        return job.future

    def _collect(self) -> list[_Job] | None:
        first = self._pending or self._queue.get()
        self._pending = None
        if first is None:
            return None
        jobs, rows = [first], len(first.rows)
        deadline = time.monotonic() + self.wait_s
        while rows < self.max_batch:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                job = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            if rows + len(job.rows) > self.max_batch:
                self._pending = job
                break
            jobs.append(job)
            rows += len(job.rows)
        return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._collect()
            if jobs is None:
                return
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                groups.setdefault((job.kind, job.top), []).append(job)
            for (kind, top), group in groups.items():
                self._run(kind, top, group)

    def _run(self, kind: str, top: int, jobs: list[_Job]) -> None:
        rows = [r for job in jobs for r in job.rows]
        try:
            if kind == "generate":
                results = self.engine.generate(rows)
            else:
                results = self.engine.score(rows, top)
            self.batches_run += 1
        except Exception as e:  # one bad batch must not take the server down
            log.exception("batch of %d %s rows failed", len(rows), kind)
            for job in jobs:
                job.future.set_exception(e)
            return
        start = 0
        for job in jobs:
            job.future.set_result(results[start:start + len(job.rows)])
            start += len(job.rows)
