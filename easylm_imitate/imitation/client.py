"""A journaled chat client for any OpenAI-compatible endpoint (the target, a judge, our own server).

    client = ChatClient("https://api.openai.com/v1", "gpt-3.5-turbo", api_key=api_key_from_env(),
                        journal="runs/collect.journal")
    results = client.chat([{"messages": [{"role": "user", "content": "hi"}], "temperature": 1.0}])

`chat` sends up to `max_in_flight` requests at once within the requests/tokens-per-minute
limits, retries 429/5xx/timeouts/connection errors/malformed bodies with exponential backoff
and jitter (waiting at least `Retry-After` when the server sends it, and pausing every request
while a rate limit is in force), and records each success in the journal before counting it.
A request already answered in the journal is never sent again: it is the same request when its
canonical JSON (see `normalize_request`) and the model name are the same. Before a request is
sent it is claimed in the journal (a lease, see `Journal.claim`), so clients in several
processes sharing one journal split the work and never send the same request twice.

401/403/404 (bad key, unknown model or endpoint) raise `FatalAPIError` from `chat`: no request
could succeed. Other failures come back as a `ChatResult` with `error` set and are retried by
the next `chat` call or rerun.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import random
import re
import sqlite3
import threading
import time

import openai
from tqdm.auto import tqdm

from easylm_imitate.imitation.cost import (Budget, BudgetExhausted, Prices, completion_tokens_estimate,
                                           prompt_tokens_estimate, worst_cost)
from easylm_imitate.imitation.journal import BUSY, CLAIMED, DONE, Journal, owner_id
from easylm_imitate.imitation.ratelimit import RateLimiter
from easylm_imitate.imitation.retry import FatalAPIError, MalformedResponse, backoff_delay, classify

__all__ = ["BudgetExhausted", "ChatClient", "ChatResult", "FatalAPIError", "api_key_from_env", "normalize_request",
           "request_key"]

MAYBE_BILLED = ("timeout", "connection", "malformed")  # failures after which the server may have billed

REQUEST_FIELDS = ("messages", "temperature", "max_tokens", "n", "seed", "top_p", "stop", "logprobs", "top_logprobs")
_FLOAT_FIELDS = ("temperature", "top_p")
_INT_FIELDS = ("max_tokens", "n", "seed", "top_logprobs")
MAX_TOP_LOGPROBS = 20  # the OpenAI API's limit
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
BUDGET_ERROR = "budget: not sent, --max_cost would be exceeded"


@dataclasses.dataclass
class ChatResult:
    """The outcome of one chat request.

    key: the journal key (hash of the model and the canonical request).
    request: the normalized request (chat.completions.create kwargs without `model`).
    texts: one reply per choice (n); [] when the request failed.
    usage: {"prompt_tokens", "completion_tokens"}.
    error: why the request failed after all retries, else None.
    finish_reasons: one per choice ("stop", "length", ...).
    from_journal: True when the answer was read from the journal rather than the server.
    logprobs: when the request asked for logprobs, one entry per choice: the OpenAI
        `choices[i].logprobs.content` list as JSON ([{"token", "logprob", "bytes", "top_logprobs"}, ...]).
    """

    key: str
    request: dict
    texts: list[str]
    usage: dict
    error: str | None = None
    finish_reasons: list = dataclasses.field(default_factory=list)
    from_journal: bool = False
    logprobs: list | None = None


def api_key_from_env(var: str | None = "OPENAI_API_KEY") -> str | None:
    """The API key held in environment variable `var`; None when `var` is empty or unset (local servers)."""
    if not var:
        return None
    return os.environ.get(var) or None


def normalize_request(request: dict) -> dict:
    """Validate a chat request and return its canonical form (what is sent and hashed).

    Allowed keys: messages (list of {"role", "content"}), temperature, max_tokens, n, seed, top_p,
    stop, logprobs, top_logprobs (0-20; sets logprobs). None values are dropped, n=1 and
    logprobs=False are dropped (the defaults), numbers get one type.
    """
    if not isinstance(request, dict):
        raise TypeError(f"a chat request must be a dict, got {type(request).__name__}")
    unknown = sorted(set(request) - set(REQUEST_FIELDS))
    if unknown:
        raise ValueError(f"unknown chat request field(s) {unknown}; allowed: {list(REQUEST_FIELDS)}")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("chat request field 'messages' must be a non-empty list")
    clean_messages = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}] must be {{'role': str, 'content': str}}")
        clean_messages.append({"role": m["role"], "content": m["content"]})
    out = {"messages": clean_messages}
    for field in REQUEST_FIELDS[1:]:
        value = request.get(field)
        if value is None:
            continue
        if field in _FLOAT_FIELDS:
            value = float(value)
        elif field in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"chat request field '{field}' must be an integer, got {value!r}")
        elif field == "logprobs":
            if not isinstance(value, bool):
                raise ValueError(f"chat request field 'logprobs' must be true or false, got {value!r}")
            if not value:
                continue
        elif field == "stop":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise ValueError("chat request field 'stop' must be a string or a list of strings")
        out[field] = value
    if out.get("n", 1) < 1:
        raise ValueError("chat request field 'n' must be at least 1")
    if out.get("n") == 1:
        del out["n"]
    if "top_logprobs" in out:
        if not 0 <= out["top_logprobs"] <= MAX_TOP_LOGPROBS:
            raise ValueError(f"chat request field 'top_logprobs' must be in [0, {MAX_TOP_LOGPROBS}], "
                             f"got {out['top_logprobs']}")
        out["logprobs"] = True
    return out


def request_key(model: str, request: dict) -> str:
    """The journal key: sha256 of the canonical JSON of the model and the normalized request."""
    payload = json.dumps({"model": model, "request": request}, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _estimate_tokens(request: dict) -> float:
    return prompt_tokens_estimate(request) + completion_tokens_estimate(request)


class ChatClient:
    """Journaled, rate-limited, retrying chat client; see the module docstring."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, journal: str | None = None,
                 max_in_flight: int = 8, requests_per_minute: float | None = None,
                 tokens_per_minute: float | None = None, max_retries: int = 8, timeout: float = 120.0,
                 price_per_1k_prompt: float = 0.0, price_per_1k_completion: float = 0.0, progress: bool = True,
                 backoff_base: float = 1.0, backoff_max: float = 60.0, seed: int | None = None,
                 lease_seconds: float = 60.0, batch_discount: float = 0.5, max_cost: float | None = None):
        """Connect to `base_url` (e.g. http://host:8000/v1) for `model`.

        journal: sqlite file recording every request (None: in memory, nothing survives the process).
        max_in_flight: most HTTP requests outstanding at once.
        requests_per_minute / tokens_per_minute: rate limits (None: unlimited).
        max_retries: retries per request after the first try; timeout: seconds per try.
        price_per_1k_*: for the cost in `stats()` (batch answers at `batch_discount` times that).
        max_cost: USD cap over everything the journal records as billed (see `cost.Budget`): no
        request goes out whose worst case would cross it; `chat` then raises BudgetExhausted once
        the requests in flight are settled. Requests need max_tokens when it is set.
        backoff_base / backoff_max: exponential backoff (seconds) when no Retry-After is given.
        seed: seeds the backoff jitter (None: random).
        lease_seconds: how long a claim on a request in flight lasts unless renewed (renewed every
        third of it while this client runs); other processes sharing the journal wait for it.
        """
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        self.base_url, self.model = base_url, model
        self.max_in_flight, self.max_retries = max_in_flight, max_retries
        self.prices = Prices(price_per_1k_prompt, price_per_1k_completion, batch_discount)
        self.progress = progress
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self._rng = random.Random(seed)
        self.journal = Journal(journal)
        self.budget = Budget.from_journal(self.journal, self.prices, max_cost)
        self.lease_seconds = lease_seconds
        self._owner = owner_id()
        self._limits = (requests_per_minute, tokens_per_minute)
        self._stats = {"requests": 0, "from_journal": 0, "sent": 0, "succeeded": 0, "failed": 0, "retries": 0,
                       "prompt_tokens": 0, "completion_tokens": 0, "errors": {}, "cost": 0.0}
        self._pause_until = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chat-client", daemon=True)
        self._thread.start()
        self._openai = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0,
                                          timeout=timeout)
        self._sem = self._call(self._make(asyncio.Semaphore, max_in_flight))
        self._limiter = self._call(self._make(RateLimiter, requests_per_minute, tokens_per_minute))
        self._closed = False

    # ---- public API ---------------------------------------------------------------------------
    def chat(self, requests: list[dict]) -> list[ChatResult]:
        """Answer every request (results in request order); see the module docstring.

        Raises BudgetExhausted (after every request in flight has settled) when `max_cost` kept
        some request from being sent.
        """
        if self._closed:
            raise RuntimeError("ChatClient is closed")
        normalized = [normalize_request(r) for r in requests]
        keys = [request_key(self.model, r) for r in normalized]
        if self.budget.max_cost is not None:
            for r in normalized:
                worst_cost(r, self.prices)  # ValueError now, not mid-run, when a request has no max_tokens
        future = asyncio.run_coroutine_threadsafe(self._chat(normalized, keys), self._loop)
        try:
            results = future.result()
        except BaseException:
            future.cancel()
            raise
        if any(r.error == BUDGET_ERROR for r in results):
            raise BudgetExhausted(self.budget.stop_message())
        return results

    def answered(self, requests: list[dict]) -> int:
        """How many of `requests` the journal already answers (sending nothing)."""
        keys = [request_key(self.model, normalize_request(r)) for r in requests]
        return len(self.journal.get_many(keys))

    def count_success(self, usage: dict, channel: str = "live") -> None:
        """Add a billed answer's API-reported usage to `stats()` (tokens and cost)."""
        self._stats["succeeded"] += 1
        self._stats["prompt_tokens"] += usage["prompt_tokens"]
        self._stats["completion_tokens"] += usage["completion_tokens"]
        self._stats["cost"] += self.prices.cost(usage["prompt_tokens"], usage["completion_tokens"], channel)

    def stats(self) -> dict:
        """Counts so far: requests, from_journal, sent (HTTP attempts), succeeded, failed, retries,
        errors by kind, prompt/completion tokens paid for by this client (as the API reported them),
        cost (USD of that usage), and journal_spent (USD over the whole journal, earlier runs and
        possibly-billed timeouts included)."""
        out = json.loads(json.dumps(self._stats))
        out["cost"] = round(out["cost"], 6)
        out["journal_spent"] = round(self.budget.spent, 6)
        return out

    def close(self) -> None:
        """Close the HTTP client, stop the worker thread and close the journal (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self.journal.close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- internals ----------------------------------------------------------------------------
    @staticmethod
    async def _make(factory, *args):
        return factory(*args)

    async def _shutdown(self) -> None:
        """Cancel what an interrupted `chat` left running, then close the HTTP client."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._openai.close()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _chat(self, requests: list[dict], keys: list[str]) -> list[ChatResult]:
        results: list[ChatResult | None] = [None] * len(requests)
        self._stats["requests"] += len(requests)
        known = self.journal.get_many(keys)
        pending: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key in known:
                entry = known[key]
                results[i] = ChatResult(key, requests[i], entry["texts"], entry["usage"], None,
                                        entry["finish_reasons"], from_journal=True, logprobs=entry["logprobs"])
                self._stats["from_journal"] += 1
            else:
                pending.setdefault(key, []).append(i)
        bar = tqdm(total=len(requests), initial=len(requests) - sum(map(len, pending.values())), unit="req",
                   desc=f"chat {self.model}", disable=not self.progress, dynamic_ncols=True)
        tasks = {asyncio.ensure_future(self._one(key, requests[idx[0]])): idx for key, idx in pending.items()}
        renewer = asyncio.ensure_future(self._renew_claims())
        try:
            for next_done in asyncio.as_completed(list(tasks)):
                result = await next_done
                for i in pending[result.key]:
                    results[i] = result
                bar.update(len(pending[result.key]))
                bar.set_postfix(sent=self._stats["sent"], retries=self._stats["retries"],
                                failed=self._stats["failed"], cost=f"{self.stats()['cost']:.4f}", refresh=False)
        finally:
            for task in (*tasks, renewer):
                task.cancel()
            await asyncio.gather(*tasks, renewer, return_exceptions=True)
            self.journal.release(None, self._owner)
            bar.close()
        return results

    async def _wait_out_pause(self) -> None:
        while (left := self._pause_until - time.monotonic()) > 0:
            await asyncio.sleep(left)

    async def _renew_claims(self) -> None:
        """Keep this client's leases alive while a `chat` call runs."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                self.journal.renew(self._owner, self.lease_seconds)
            except sqlite3.OperationalError:  # locked for longer than the timeout: try again next time
                pass

    async def _one(self, key: str, request: dict) -> ChatResult:
        """Answer one request: claim it in the journal, send it (with retries), journal the answer.

        While another process holds the claim, wait (polling) until it is answered, released or
        its lease runs out; an answer found in the journal is returned without sending.
        """
        attempt, claimed, polls, worst = 0, False, 0, 0.0
        try:
            while True:
                estimate = _estimate_tokens(request)
                await self._wait_out_pause()
                await self._limiter.acquire(estimate)
                async with self._sem:
                    await self._wait_out_pause()
                    state = CLAIMED if claimed else self.journal.claim(key, self._owner, self.lease_seconds)
                    if state == CLAIMED:
                        claimed = True
                        worst = worst_cost(request, self.prices) if self.budget.max_cost is not None else 0.0
                        if not await self._reserve(worst):
                            worst = 0.0
                            self._limiter.refund(estimate)
                            return ChatResult(key, request, [], {"prompt_tokens": 0, "completion_tokens": 0},
                                              BUDGET_ERROR)
                    if state != CLAIMED:
                        self._limiter.refund(estimate)
                    else:
                        self._stats["sent"] += 1
                        try:
                            response = await self._openai.chat.completions.create(model=self.model, **request)
                            texts, usage, finish, logprobs = _unpack(response, request.get("n", 1),
                                                                     request.get("logprobs", False))
                            failure = None
                        except Exception as e:  # classify() re-raises what it does not recognise
                            failure = classify(e)
                if state == DONE:
                    entry = self.journal.get_many([key])[key]
                    self._stats["from_journal"] += 1
                    return ChatResult(key, request, entry["texts"], entry["usage"], None, entry["finish_reasons"],
                                      from_journal=True, logprobs=entry["logprobs"])
                if state == BUSY:  # another process is sending it
                    await asyncio.sleep(min(self.lease_seconds / 3, 0.05 * 2 ** min(polls, 5)))
                    polls += 1
                    continue
                if failure is None:
                    self._limiter.settle(estimate, usage["prompt_tokens"] + usage["completion_tokens"])
                    self.journal.put_success(key, self.model, request, texts, usage, finish, logprobs)  # drops the claim
                    claimed = False
                    self.budget.settle(worst, self.prices.cost(usage["prompt_tokens"], usage["completion_tokens"]))
                    self.count_success(usage)
                    return ChatResult(key, request, texts, usage, None, finish, logprobs=logprobs)
                if failure.kind in MAYBE_BILLED:  # the server may have done (and billed) the work
                    if worst:
                        self.journal.add_charge(key, worst, failure.kind)
                    self.budget.settle(worst, worst)
                else:
                    self.budget.settle(worst, 0.0)
                worst = 0.0
                delay, error = self._after_failure(key, request, failure, attempt)
                if error is not None:
                    return ChatResult(key, request, [], {"prompt_tokens": 0, "completion_tokens": 0}, error)
                attempt += 1
                await asyncio.sleep(delay)
        finally:
            if claimed:
                self.journal.release(key, self._owner)

    async def _reserve(self, worst: float) -> bool:
        """Reserve `worst` in the budget, waiting while requests in flight may still settle below
        their worst case; False when the cap refuses it with nothing left in flight."""
        while not self.budget.reserve(worst):
            if self.budget.reserved <= 0:
                return False
            await asyncio.sleep(0.02)
        return True

    def _after_failure(self, key: str, request: dict, failure, attempt: int) -> tuple[float, str | None]:
        """Count a failed try: (delay before the next, None), or (0, error) when it was the last
        (journaled as a failure). Raises FatalAPIError when no request could succeed."""
        errors = self._stats["errors"]
        errors[failure.kind] = errors.get(failure.kind, 0) + 1
        if failure.fatal:
            raise FatalAPIError(f"{self.base_url} (model {self.model!r}): {failure.message}")
        if not failure.retryable or attempt >= self.max_retries:
            self._stats["failed"] += 1
            error = f"{failure.kind}: {failure.message} (after {attempt + 1} attempt(s))"
            self.journal.put_failure(key, self.model, request, error, attempt + 1)
            return 0.0, error
        if failure.retry_after is not None:
            delay = failure.retry_after * (1.0 + 0.1 * self._rng.random())
            if failure.kind == "rate_limit":  # everyone waits while the limit is in force
                self._pause_until = max(self._pause_until, time.monotonic() + delay)
        else:
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_max, self._rng)
        self._stats["retries"] += 1
        return delay, None


def _unpack(response, n: int, want_logprobs: bool = False) -> tuple[list[str], dict, list, list | None]:
    """texts, usage, finish reasons and (when asked for) per-choice logprobs content of a completion;
    MalformedResponse if it is unusable (logprobs asked for but missing included)."""
    choices = sorted(getattr(response, "choices", None) or [], key=lambda c: c.index or 0)
    if len(choices) != n:
        raise MalformedResponse(f"expected {n} choice(s), got {len(choices)}")
    texts = []
    for c in choices:
        if c.message is None:
            raise MalformedResponse(f"choice {c.index} has no message")
        text = c.message.content or ""
        if _LONE_SURROGATE.search(text):  # JSON can carry "\ud800"; no journal or output file can
            raise MalformedResponse(f"choice {c.index} holds a lone surrogate (text that is not valid Unicode)")
        texts.append(text)
    logprobs = [_logprobs_content(c) for c in choices] if want_logprobs else None
    usage = getattr(response, "usage", None)
    usage = {"prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
             "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0)}
    return texts, usage, [c.finish_reason for c in choices], logprobs


def _logprobs_content(choice) -> list[dict]:
    """`choice.logprobs.content` as plain JSON: [{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if content is None:
        raise MalformedResponse(f"choice {choice.index} has no logprobs although they were asked for")
    out = []
    for t in content:
        entry = {"token": t.token, "logprob": float(t.logprob), "bytes": t.bytes,
                 "top_logprobs": [{"token": a.token, "logprob": float(a.logprob), "bytes": a.bytes}
                                  for a in (t.top_logprobs or [])]}
        if _LONE_SURROGATE.search(entry["token"]) or any(_LONE_SURROGATE.search(a["token"])
                                                         for a in entry["top_logprobs"]):
            raise MalformedResponse(f"choice {choice.index} logprobs hold a lone surrogate")
        out.append(entry)
    return out
