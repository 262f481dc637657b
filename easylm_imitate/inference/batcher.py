"""Background batching: requests that arrive within a few milliseconds run as one batch.

Each job is a list of generation rows (`GenRequest`) or a list of sequences to score. One
worker thread owns the model: it waits for a job, keeps collecting for `wait_ms` (or until
`max_batch` rows), runs all generation rows as one sampler batch (sampling parameters are
per row, so requests with different settings share it) and all scoring rows per `top`, then
resolves each job's future with its share of the results.

Work nobody waits for is dropped: a job whose `cancel` event is set (or whose future was
cancelled) leaves the queue, and its running rows stop at the engine's next decode chunk.
At most `max_queue` jobs wait; more are refused with `QueueFull`. `shutdown()` fails every
queued and running job with `ShuttingDown` within one decode chunk.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import math
import threading
import time

from easylm_imitate.inference.engine import Engine, GenRequest

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The batcher already has `max_queue` jobs waiting; retry after `retry_after_s`."""

    def __init__(self, max_queue: int, retry_after_s: int):
        super().__init__(f"the server is busy: {max_queue} requests are already waiting (max_queue); "
                         f"retry after {retry_after_s} s")
        self.max_queue, self.retry_after_s = max_queue, retry_after_s


class ShuttingDown(RuntimeError):
    """The batcher is shutting down and takes no more work."""


@dataclasses.dataclass
class _Job:
    kind: str  # 'generate' | 'score'
    rows: list
    top: int
    future: concurrent.futures.Future
    cancel: threading.Event

    def dropped(self) -> bool:
        return self.cancel.is_set() or self.future.cancelled()


class Batcher:
    """Serialises model work onto one thread and merges concurrent requests into batches."""

    def __init__(self, engine: Engine, *, max_batch: int = 16, wait_ms: float = 5.0, max_queue: int = 64):
        self.engine = engine
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.wait_s = wait_ms / 1000.0
        self.batches_run = 0
        self.last_batch_s = 1.0  # duration of the latest batch, for Retry-After
        self._jobs: collections.deque[_Job] = collections.deque()
        self._running: list[_Job] = []
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="easylm-batcher", daemon=True)
        self._thread.start()

    # ---- submitting ---------------------------------------------------------------------
    def generate(self, rows: list[GenRequest], *, cancel: threading.Event | None = None,
                 bounded: bool = True) -> concurrent.futures.Future:
        """Queue generation rows; the future resolves to their `GenResult`s in order.

        Setting `cancel` drops the job: removed if still queued, its rows stopped at the next
        decode chunk if running (each row's own `cancel` is set to it). With `bounded`,
        raises `QueueFull` when `max_queue` jobs already wait.
        """
        job = _Job("generate", rows, 0, concurrent.futures.Future(), cancel or threading.Event())
        for row in rows:
            row.cancel = job.cancel
        return self._submit(job, bounded)

    def score(self, sequences: list[list[int]], top: int = 0, *, cancel: threading.Event | None = None,
              bounded: bool = True) -> concurrent.futures.Future:
        """Queue token sequences to score; the future resolves to their `SequenceScores`.
        `cancel` and `bounded` as for `generate` (a running scoring pass is not interrupted)."""
        return self._submit(_Job("score", sequences, top, concurrent.futures.Future(),
                                 cancel or threading.Event()), bounded)

    @property
    def queued(self) -> int:
        """Jobs waiting for the model (dropped ones not counted)."""
        with self._cond:
            self._prune()
            return len(self._jobs)

    @property
    def running(self) -> int:
        """Jobs in the batch the model is running now."""
        with self._cond:
            return len(self._running)

    def shutdown(self) -> None:
        """Take no more work; fail queued jobs and stop running rows (their futures raise
        `ShuttingDown`); the worker thread then exits."""
        with self._cond:
            self._stopping = True
            for job in self._jobs:
                _fail(job, ShuttingDown("the server is shutting down"))
            self._jobs.clear()
            for job in self._running:
                job.cancel.set()
            self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """`shutdown()` and wait up to `timeout` s for the worker (it is a daemon thread: a
        compile still in progress does not keep the process alive)."""
        self.shutdown()
        self._thread.join(timeout=timeout)
        if self._thread.is_alive():
            log.warning("the model thread is still busy after %.0f s; leaving it", timeout)

    def _submit(self, job: _Job, bounded: bool) -> concurrent.futures.Future:
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            self._prune()
            if bounded and len(self._jobs) >= self.max_queue:
                waits = 1 + len(self._jobs) // max(1, self.max_batch)
                raise QueueFull(self.max_queue, max(1, math.ceil(self.last_batch_s * waits)))
            self._jobs.append(job)
            self._cond.notify_all()
        return job.future

    # ---- worker -------------------------------------------------------------------------
    def _prune(self) -> None:
        """Remove dropped jobs from the queue (caller holds the lock)."""
        if any(job.dropped() for job in self._jobs):
            for job in [j for j in self._jobs if j.dropped()]:
                job.future.cancel()
            self._jobs = collections.deque(j for j in self._jobs if not j.dropped())

    def _collect(self) -> list[_Job] | None:
        """The next batch of jobs (marked running), or None when shutting down."""
        with self._cond:
            while True:
                self._prune()
                if self._stopping:
                    return None
                if self._jobs:
                    break
                self._cond.wait()
            deadline = time.monotonic() + self.wait_s
            while sum(len(j.rows) for j in self._jobs) < self.max_batch and not self._stopping:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                self._cond.wait(timeout)
            self._prune()
            jobs, rows = [], 0
            while self._jobs and (not jobs or rows + len(self._jobs[0].rows) <= self.max_batch):
                job = self._jobs.popleft()
                if job.future.set_running_or_notify_cancel():
                    jobs.append(job)
                    rows += len(job.rows)
            self._running = jobs
            return jobs

    def _loop(self) -> None:
        while (jobs := self._collect()) is not None:
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                groups.setdefault((job.kind, job.top), []).append(job)
            for (kind, top), group in groups.items():
                self._run(kind, top, group)
            with self._cond:
                self._running = []

    def _run(self, kind: str, top: int, jobs: list[_Job]) -> None:
        live = [job for job in jobs if not job.cancel.is_set()]
        for job in jobs:
            if job.cancel.is_set():
                _fail(job, self._dropped_error())
        if not live:
            return
        rows = [r for job in live for r in job.rows]
        start = time.monotonic()
        try:
            if kind == "generate":
                results = self.engine.generate(rows)
            else:
                results = self.engine.score(rows, top)
            self.batches_run += 1
        except Exception as e:  # one bad batch must not take the server down
            log.exception("batch of %d %s rows failed", len(rows), kind)
            for job in live:
                _fail(job, e)
            return
        self.last_batch_s = time.monotonic() - start
        offset = 0
        for job in live:
            if job.cancel.is_set():
                _fail(job, self._dropped_error())
            else:
                job.future.set_result(results[offset:offset + len(job.rows)])
            offset += len(job.rows)

    def _dropped_error(self) -> Exception:
        if self._stopping:
            return ShuttingDown("the server is shutting down")
        return concurrent.futures.CancelledError("the request was cancelled")


def _fail(job: _Job, error: Exception) -> None:
    if not job.future.done():
        if job.future.running() or job.future.set_running_or_notify_cancel():
            job.future.set_exception(error)
