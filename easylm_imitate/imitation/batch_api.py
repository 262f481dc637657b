"""Send chat requests as OpenAI Batch jobs (`--batch_api`), journaled so nothing is paid twice.

    with BatchClient(ChatClient(base_url, model, journal="out.journal"), poll_seconds=60) as client:
        results = client.chat(requests)   # same interface as ChatClient.chat

Each job goes through these states, each written to the journal (`batch_jobs`) before the call
it leads to, and the call's result written right after it:

    uploading  -> files.create(purpose="batch")           -> input_file_id
    creating   -> batches.list (a batch tagged with this job?) or batches.create(metadata tag)
    submitted  -> batches.retrieve until it ends          -> output/error file ids
    ended      -> files.content of both; every answer journaled as a success
    done

A rerun of the same command (after a crash or kill -9 anywhere) finishes the open jobs first:
it re-uploads a file whose id it never saw (uploads are free), looks for the tagged batch before
creating one (so a batch created just before the crash is re-attached, not created again), and
polls a submitted batch by its id. Requests already answered in the journal are never sent.
Lines that failed or expired go into a new, smaller batch (up to `max_rounds` batches), or to
the live endpoint with `fallback="live"`. Batch answers cost `Prices.batch_discount` times the
live price; `max_cost` reserves the worst case of a whole batch before it is created (only the
lines that fit go in; once the job has settled at its real cost, the next round takes more).
"""

from __future__ import annotations

import io
import json
import time
import uuid

import openai
from openai.types.chat import ChatCompletion

from easylm_imitate.imitation.client import ChatClient, ChatResult, _unpack, normalize_request, request_key
from easylm_imitate.imitation.cost import BudgetExhausted, worst_cost
from easylm_imitate.imitation.retry import MalformedResponse

FALLBACKS = ("batch", "live")
ENDPOINT = "/v1/chat/completions"
_TAG = "easylm_job"
_NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0}


class BatchClient:
    """Batch API front of a ChatClient (its journal, budget, prices and stats); see the module docstring."""

    def __init__(self, live: ChatClient, api_key: str | None = None, poll_seconds: float = 30.0,
                 fallback: str = "batch", max_rounds: int = 3, max_requests_per_batch: int = 50000,
                 completion_window: str = "24h", timeout: float = 120.0):
        """live: the ChatClient whose journal, budget and stats this shares (and the live fallback).

        poll_seconds: wait between batches.retrieve calls; fallback: where failed/expired lines go
        ("batch": a new batch, "live": live requests); max_rounds: batches per `chat` call at most
        (the rest stay failed, a rerun retries them); max_requests_per_batch: lines per job.
        """
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        if max_rounds < 1 or max_requests_per_batch < 1:
            raise ValueError("max_rounds and max_requests_per_batch must be at least 1")
        self.live, self.model, self.journal, self.budget = live, live.model, live.journal, live.budget
        self.poll_seconds, self.fallback, self.max_rounds = poll_seconds, fallback, max_rounds
        self.max_requests_per_batch, self.completion_window = max_requests_per_batch, completion_window
        self.max_in_flight = max_requests_per_batch  # callers size rounds by it
        self._openai = openai.OpenAI(base_url=live.base_url, api_key=api_key or "not-needed", timeout=timeout,
                                     max_retries=5)
        self._stats = {"batch_jobs": 0, "batch_jobs_resumed": 0, "batch_lines": 0, "batch_lines_failed": 0,
                       "batch_polls": 0}

    # ---- public API ---------------------------------------------------------------------------
    def chat(self, requests: list[dict]) -> list[ChatResult]:
        """Answer every request through batch jobs (results in request order), like ChatClient.chat."""
        normalized = [normalize_request(r) for r in requests]
        keys = [request_key(self.model, r) for r in normalized]
        by_key = dict(zip(keys, normalized))
        if self.budget.max_cost is not None:
            for r in normalized:
                worst_cost(r, self.prices)
        self._live_stats("requests", len(requests))
        errors: dict[str, str] = {}
        for job in self.journal.batch_jobs():  # re-attach to what an earlier run left open
            self._stats["batch_jobs_resumed"] += 1
            self.budget.reserve(job["worst_cost"], force=True)
            errors.update(self._finish(job))
        from_journal = set(self.journal.get_many(keys))
        self._live_stats("from_journal", len(from_journal))
        stopped = False
        for round_no in range(self.max_rounds):
            pending = self._unanswered(keys)
            if not pending or (round_no > 0 and self.fallback == "live"):
                break
            jobs, stopped = self._submit(pending, by_key)
            for job in jobs:
                errors.update(self._finish(job))
            if stopped and not jobs:  # the cap left no room even for one line
                break
        pending = self._unanswered(keys)
        if pending and self.fallback == "live" and not stopped:
            for result in self.live.chat([by_key[k] for k in pending]):  # raises BudgetExhausted at the cap
                if result.error:
                    errors[result.key] = result.error
        if stopped and pending:
            raise BudgetExhausted(self.budget.stop_message())
        known = self.journal.get_many(keys)
        results = []
        for key, request in zip(keys, normalized):
            entry = known.get(key)
            if entry is None:
                results.append(ChatResult(key, request, [], dict(_NO_USAGE),
                                          errors.get(key, "batch: not answered (rerun to retry)")))
            else:
                results.append(ChatResult(key, request, entry["texts"], entry["usage"], None, entry["finish_reasons"],
                                          from_journal=key in from_journal, logprobs=entry["logprobs"]))
        return results

    @property
    def prices(self):
        """The live client's prices."""
        return self.live.prices

    def stats(self) -> dict:
        """The live client's stats (tokens and cost include batch answers, at the batch price) plus
        batch_jobs, batch_jobs_resumed, batch_lines, batch_lines_failed and batch_polls."""
        return dict(self.live.stats(), **self._stats)

    def close(self) -> None:
        """Close the HTTP client and the live client (idempotent)."""
        self._openai.close()
        self.live.close()

    def __enter__(self) -> "BatchClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- internals ----------------------------------------------------------------------------
    def _unanswered(self, keys: list[str]) -> list[str]:
        """The distinct `keys` the journal holds no answer for, in order."""
        known = self.journal.get_many(keys)
        return [k for k in dict.fromkeys(keys) if k not in known]

    def _live_stats(self, field: str, n: int) -> None:
        self.live._stats[field] += n

    def _submit(self, pending: list[str], by_key: dict[str, dict]) -> tuple[list[dict], bool]:
        """Journal new jobs for `pending` keys, as many as the budget allows; (jobs, stopped by the cap)."""
        jobs, stopped = [], False
        for start in range(0, len(pending), self.max_requests_per_batch):
            chunk, worst = [], 0.0
            for key in pending[start:start + self.max_requests_per_batch]:
                cost = worst_cost(by_key[key], self.prices, "batch") if self.budget.max_cost is not None else 0.0
                if not self.budget.reserve(cost):
                    stopped = True
                    break
                chunk.append(key)
                worst += cost
            if chunk:
                tag = uuid.uuid4().hex
                job = self.journal.new_batch_job(tag, [[k, by_key[k]] for k in chunk], worst)
                jobs.append({"job": job, "tag": tag, "state": "uploading", "keys": [[k, by_key[k]] for k in chunk],
                             "input_file_id": None, "batch_id": None, "output_file_id": None,
                             "error_file_id": None, "worst_cost": worst})
                self._stats["batch_jobs"] += 1
            if stopped:
                break
        return jobs, stopped

    def _finish(self, job: dict) -> dict[str, str]:
        """Drive `job` from its journaled state to done; returns key -> error for lines not answered."""
        def update(**fields):
            self.journal.update_batch_job(job["job"], **fields)  # durable before the next call
            job.update(fields)

        requests = dict((k, r) for k, r in job["keys"])
        if job["state"] == "uploading":
            data = "".join(json.dumps({"custom_id": k, "method": "POST", "url": ENDPOINT,
                                       "body": dict(r, model=self.model)}, ensure_ascii=False) + "\n"
                           for k, r in requests.items()).encode("utf-8")
            uploaded = self._openai.files.create(file=(f"easylm-{job['tag']}.jsonl", io.BytesIO(data)), purpose="batch")
            update(input_file_id=uploaded.id, state="creating")
        if job["state"] == "creating":
            update(batch_id=self._create_once(job).id, state="submitted")
        if job["state"] == "submitted":
            while True:
                batch = self._openai.batches.retrieve(job["batch_id"])
                self._stats["batch_polls"] += 1
                if batch.status in ("completed", "expired", "failed", "cancelled"):
                    break
                time.sleep(self.poll_seconds)
            update(output_file_id=batch.output_file_id, error_file_id=batch.error_file_id, state="ended")
            job["status"] = batch.status
        errors = self._collect(job, requests)
        update(state="done")
        return errors

    def _create_once(self, job: dict):
        """The batch of `job`: the tagged one if it exists, else a new one. A create whose reply is
        lost is never simply re-sent (the client's own retries are off for it): the next try first
        looks for the tag again."""
        for attempt in range(6):
            batch = self._find_tagged(job["tag"])
            if batch is not None:
                return batch
            try:
                return self._openai.with_options(max_retries=0).batches.create(
                    input_file_id=job["input_file_id"], endpoint=ENDPOINT, completion_window=self.completion_window,
                    metadata={_TAG: job["tag"]})
            except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError):
                if attempt == 5:
                    raise
                time.sleep(min(30.0, 2.0 ** attempt))
        raise AssertionError("unreachable")

    def _find_tagged(self, tag: str):
        """The batch created for journal tag `tag` (a create whose reply was lost), or None."""
        for batch in self._openai.batches.list(limit=100):
            if (batch.metadata or {}).get(_TAG) == tag:
                return batch
        return None

    def _collect(self, job: dict, requests: dict[str, dict]) -> dict[str, str]:
        """Journal the answers of an ended job and settle its reservation; key -> error for the rest."""
        errors, actual = {}, 0.0
        answered = set(self.journal.get_many(requests))  # journaled before a crash: already counted as spent
        for row in self._lines(job["output_file_id"]):
            key, response = row.get("custom_id"), row.get("response") or {}
            if key not in requests or key in answered:
                continue
            request = requests[key]
            if response.get("status_code") != 200:
                errors[key] = f"batch line: HTTP {response.get('status_code')}"
                continue
            try:
                completion = ChatCompletion.model_validate(response.get("body"))
                texts, usage, finish, logprobs = _unpack(completion, request.get("n", 1), request.get("logprobs", False))
            except (ValueError, MalformedResponse) as e:
                errors[key] = f"batch line: malformed response: {e}"
                continue
            self.journal.put_success(key, self.model, request, texts, usage, finish, logprobs, channel="batch")
            self.live.count_success(usage, "batch")
            actual += self.prices.cost(usage["prompt_tokens"], usage["completion_tokens"], "batch")
            answered.add(key)
        for row in self._lines(job["error_file_id"]):
            key = row.get("custom_id")
            if key in requests and key not in answered:
                error, response = row.get("error") or {}, row.get("response") or {}
                body_error = (response.get("body") or {}).get("error") or {}
                errors[key] = (f"batch line: {error.get('code') or 'HTTP ' + str(response.get('status_code'))}: "
                               f"{error.get('message') or body_error.get('message', '')}")
        status = job.get("status", "ended")
        for key, request in requests.items():
            if key not in answered:
                errors.setdefault(key, f"batch line: no answer (batch {job['batch_id']} {status})")
                self.journal.put_failure(key, self.model, request, errors[key], 1)
        self._stats["batch_lines"] += len(requests)
        self._stats["batch_lines_failed"] += len(requests) - len(answered)
        self.budget.settle(job["worst_cost"], actual)
        return errors

    def _lines(self, file_id: str | None) -> list[dict]:
        """The JSON lines of an output or error file (none for None)."""
        if not file_id:
            return []
        text = self._openai.files.content(file_id).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]
