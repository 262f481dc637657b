"""A real loopback HTTP server speaking the OpenAI chat-completions protocol, for tests and dry runs.

    with OpenAIStub(responder=lambda body: "hi", faults=FaultPlan(per_attempt=[Fault("rate_limit")])) as stub:
        client = ChatClient(stub.base_url, "stub")
        ...
    stub.request_log        # one RequestRecord per request received, in arrival order
    stub.max_concurrency    # most chat requests ever being handled at once
    stub.prompt_counts()    # Counter: last user message -> requests answered successfully
    stub.billing            # {"live"|"batch": {"requests", "prompt_tokens", "completion_tokens"}}: what was billed
    stub.billed_prompts()   # Counter: last user message -> times billed (live answers and batch lines)
    stub.http_log           # (method, path) of every HTTP request, chat or not

It also serves the Batch API (`/v1/files`, `/v1/batches`, see `stub_batches`), returns
`logprobs` (with `top_logprobs` alternatives) when a request asks for them, and stops a reply at
`max_tokens` words (finish_reason "length"). Usage counts words as tokens. A request is billed
when the stub answers it with usage (ok, slow, and the `malformed`/`drop` faults, which did the
work but lost the reply on the way), or when a batch line is answered.

The server is FastAPI under uvicorn in a daemon thread on 127.0.0.1 (a free port by default).
A chat request counts as in flight from its arrival until the last byte of its response is
handed to the socket, or until the handler ends (dropped connection, error). A request the
client abandoned during a ``slow`` fault stops counting as soon as the server sees the disconnect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from easylm_imitate.testing.faults import LINE_KINDS, Fault, FaultPlan
from easylm_imitate.testing.stub_batches import BatchStore, add_batch_routes

__all__ = ["Fault", "FaultPlan", "OpenAIStub", "RequestRecord", "echo_responder", "stub_logprobs"]

Responder = Callable[[dict], "str | list[str]"]
_ROLES = ("system", "user", "assistant", "developer", "tool")


@dataclasses.dataclass
class RequestRecord:
    """One chat request as the stub saw it."""

    index: int
    body: dict
    prompt: str  # content of the last user message
    attempt: int  # 1 for the first arrival of this exact body, 2 for the second, ...
    started: float  # time.monotonic()
    finished: float | None = None
    outcome: str = "pending"  # "ok", a fault kind, "bad_request", "unauthorized" or "responder_error"
    status: int | None = None


def echo_responder(body: dict) -> str:
    """Default responder: echoes the last user message."""
    return "echo: " + _last_user(body["messages"])


def _last_user(messages: list) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # content parts
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return ""


def _words(text: str) -> int:
    return len(text.split())


_TOKEN = re.compile(r"\s*\S+")  # the stub's tokens: a word with the whitespace before it


def stub_logprobs(text: str, k: int) -> list[dict]:
    """OpenAI-style `logprobs.content` for `text`: one entry per stub token (a word with its leading
    whitespace), a deterministic log-probability, and `k` alternatives, the sampled token first."""
    out = []
    for i, token in enumerate(_TOKEN.findall(text)):
        seed = int.from_bytes(hashlib.sha256(f"{i}:{token}".encode("utf-8", "surrogatepass")).digest()[:4], "big")
        lp = -0.01 - (seed % 1000) / 1000.0
        alternatives = [(token, lp)] + [(f"{token}~{j}", lp - j) for j in range(1, k)]
        out.append({"token": token, "logprob": lp, "bytes": list(token.encode("utf-8", "surrogatepass")),
                    "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode("utf-8", "surrogatepass"))}
                                     for t, v in alternatives[:k]]})
    return out


def _error(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status, headers=headers)


def _validate(body) -> str | None:
    """Why `body` is not a valid chat request, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str):
        return "'model' is required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return f"messages[{i}].role is invalid"
        if not isinstance(m.get("content"), (str, list)):
            return f"messages[{i}].content must be a string"
    n = body.get("n", 1)
    if not isinstance(n, int) or n < 1:
        return "'n' must be a positive integer"
    return None


class OpenAIStub:
    """Context manager running a fault-injecting OpenAI-compatible server on loopback."""

    def __init__(self, responder: Responder | None = None, faults: FaultPlan | None = None,
                 models: tuple[str, ...] = ("stub",), api_key: str | None = None, delay: float = 0.0,
                 host: str = "127.0.0.1", port: int = 0, batch_faults: FaultPlan | None = None,
                 batch_seconds: float = 0.0):
        """responder(body) returns the reply text (used for every choice) or a list of n texts.

        batch_faults: faults for batch lines (see `faults`); batch_seconds: how long a batch job
        stays in progress before it ends (a slow job).
        hold(point) / release(point): make the handler at `point` wait (see `hold`).

        api_key: when set, requests must carry ``Authorization: Bearer <api_key>`` (else 401).
        delay: seconds every successful reply takes (a slow but healthy server).
        """
        self.responder = responder or echo_responder
        self.faults = faults or FaultPlan()
        self.models = tuple(models)
        self.api_key = api_key
        self.delay = delay
        self.host, self.port = host, port
        self._lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._attempts: Counter = Counter()
        self._in_flight = 0
        self._max_in_flight = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._billing = {c: Counter() for c in ("live", "batch")}
        self._billed_prompts: Counter = Counter()
        self._http_log: list[tuple[str, str]] = []
        self._holds: set[str] = set()
        self._reached: dict[str, threading.Event] = {}
        self._fail_at: Counter = Counter()
        self.batches = BatchStore(self, batch_faults or FaultPlan(), batch_seconds)

    # ---- public view -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The URL to pass as an OpenAI client's base_url (ends in /v1)."""
        if self._server is None:
            raise RuntimeError("the stub server is not running")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def request_log(self) -> list[RequestRecord]:
        """A snapshot of every chat request received so far, in arrival order."""
        with self._lock:
            return list(self._log)

    @property
    def max_concurrency(self) -> int:
        """The most chat requests in flight at the same moment since start (or `reset`)."""
        with self._lock:
            return self._max_in_flight

    def prompt_counts(self, outcome: str | None = "ok") -> Counter:
        """Last user message -> number of requests with that outcome (None: all requests)."""
        return Counter(r.prompt for r in self.request_log if outcome is None or r.outcome == outcome)

    @property
    def billing(self) -> dict:
        """{"live"|"batch": {"requests", "prompt_tokens", "completion_tokens"}} billed so far."""
        with self._lock:
            return {c: {k: b[k] for k in ("requests", "prompt_tokens", "completion_tokens")}
                    for c, b in self._billing.items()}

    def billed_prompts(self) -> Counter:
        """Last user message -> how many times an answer to it was billed (live and batch)."""
        with self._lock:
            return Counter(self._billed_prompts)

    @property
    def http_log(self) -> list[tuple[str, str]]:
        """(method, path) of every HTTP request received, in arrival order."""
        with self._lock:
            return list(self._http_log)

    def hold(self, point: str) -> threading.Event:
        """Make the handler at `point` wait until `release(point)`; returns an event set when one
        reaches it. Points: "files.created" (after the upload is stored, before the reply), "batches.create" (before the batch exists),
        "batches.created" (after it exists, before the reply), "batches.retrieve"."""
        with self._lock:
            self._holds.add(point)
            self._reached[point] = threading.Event()
            return self._reached[point]

    def fail_at(self, point: str, times: int = 1) -> None:
        """Answer HTTP 500 the next `times` times a handler reaches `point` (see `hold`), after
        doing its work: e.g. "batches.created" creates the batch, then the reply is an error."""
        with self._lock:
            self._fail_at[point] += times

    def release(self, point: str) -> None:
        """Let handlers held at `point` go on."""
        with self._lock:
            self._holds.discard(point)

    async def _checkpoint(self, point: str) -> None:
        with self._lock:
            held, event = point in self._holds, self._reached.get(point)
            fail = self._fail_at[point] > 0
            if fail:
                self._fail_at[point] -= 1
        if fail:
            raise RuntimeError(f"injected failure at {point}")
        if held:
            event.set()
            while point in self._holds:
                await asyncio.sleep(0.02)

    def bill(self, channel: str, body: dict, usage: dict) -> None:
        """Count one answered request on `channel` ("live" or "batch")."""
        with self._lock:
            b = self._billing[channel]
            b["requests"] += 1
            b["prompt_tokens"] += usage["prompt_tokens"]
            b["completion_tokens"] += usage["completion_tokens"]
            self._billed_prompts[_last_user(body.get("messages") or [])] += 1

    def reset(self) -> None:
        """Forget the request log, attempt counts and concurrency record."""
        with self._lock:
            self._log.clear()
            self._attempts.clear()
            self._max_in_flight = self._in_flight

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "OpenAIStub":
        """Start serving; returns once the socket accepts connections."""
        if self._server is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(_Metered(self._build_app(), self), log_level="critical", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2, timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"openai-stub:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the OpenAI stub server failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end."""
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(5)
        self._server, self._thread = None, None

    def __enter__(self) -> "OpenAIStub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- bookkeeping -------------------------------------------------------------------------
    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _begin(self, body: dict) -> RequestRecord:
        key = json.dumps(body, sort_keys=True, ensure_ascii=False)
        with self._lock:
            self._attempts[key] += 1
            record = RequestRecord(index=len(self._log), body=body, prompt=_last_user(body.get("messages") or []),
                                   attempt=self._attempts[key], started=time.monotonic())
            self._log.append(record)
        return record

    @staticmethod
    def _end(record: RequestRecord, outcome: str, status: int) -> None:
        record.outcome, record.status, record.finished = outcome, status, time.monotonic()

    # ---- HTTP --------------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        return self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}"

    def _build_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        add_batch_routes(app, self)

        @app.get("/v1/models")
        async def list_models(request: Request):
            if not self._authorized(request):
                return _error(401, "invalid api key", "invalid_request_error")
            return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "stub"}
                                               for m in self.models]}

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request):
            try:
                body = json.loads(await request.body())
            except ValueError:
                body = None
            record = self._begin(body if isinstance(body, dict) else {})
            if not self._authorized(request):
                self._end(record, "unauthorized", 401)
                return _error(401, "invalid api key", "invalid_request_error")
            problem = _validate(body)
            if problem:
                self._end(record, "bad_request", 400)
                return _error(400, problem, "invalid_request_error")
            fault = self.faults.choose(body, record.attempt)
            if fault is not None and fault.kind in LINE_KINDS:  # batch-line faults: not for live requests
                fault = None
            if fault is not None and fault.kind in ("malformed", "drop"):  # the work is done (and billed)
                try:
                    self.bill("live", body, self.answer(body, record.index)["usage"])
                except Exception:
                    pass
            if fault is not None and fault.kind != "slow":
                return self._fault_response(record, fault)
            wait = self.delay + (fault.delay if fault is not None else 0.0)
            if wait and not await _sleep_unless_disconnected(request, wait):
                self._end(record, "client_gone", 499)
                return Response(status_code=499)
            try:
                completion = self.answer(body, record.index)
            except Exception as e:  # a bug in the test's responder: make it visible to the client
                self._end(record, "responder_error", 500)
                return _error(500, f"responder failed: {type(e).__name__}: {e}", "server_error")
            self._end(record, fault.kind if fault is not None else "ok", 200)
            self.bill("live", body, completion["usage"])
            return _AsciiJSONResponse(completion)

        return app

    def _texts(self, body: dict) -> list[str]:
        n = body.get("n", 1)
        out = self.responder(body)
        texts = [out] * n if isinstance(out, str) else list(out)
        if len(texts) != n or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"responder must return a string or a list of {n} strings")
        return texts

    def answer(self, body: dict, index: int | str) -> dict:
        """The chat completion (a JSON dict) answering a valid `body`: the responder's texts cut at
        max_tokens words, with logprobs when asked for, and word-count usage."""
        texts, finish = [], []
        limit = body.get("max_tokens")
        for text in self._texts(body):
            pieces = _TOKEN.findall(text)
            cut = isinstance(limit, int) and len(pieces) > limit
            texts.append("".join(pieces[:limit]) if cut else text)
            finish.append("length" if cut else "stop")
        k = body.get("top_logprobs") or 0
        logprobs = [{"content": stub_logprobs(t, k), "refusal": None} if body.get("logprobs") else None
                    for t in texts]
        prompt_tokens = sum(_words(m["content"]) for m in body["messages"] if isinstance(m["content"], str))
        completion_tokens = sum(_words(t) for t in texts)
        return {
            "id": f"chatcmpl-stub-{index}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f,
                         "logprobs": lp} for i, (t, f, lp) in enumerate(zip(texts, finish, logprobs))],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def _fault_response(self, record: RequestRecord, fault: Fault):
        if fault.kind == "rate_limit":
            headers = {} if fault.retry_after is None else {"retry-after": f"{fault.retry_after:g}"}
            self._end(record, "rate_limit", 429)
            return _error(429, "rate limit reached (injected)", "rate_limit_error", headers)
        if fault.kind == "server_error":
            self._end(record, "server_error", 500)
            return _error(500, "internal error (injected)", "server_error")
        if fault.kind == "malformed":
            self._end(record, "malformed", 200)
            return Response(b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "message": {"role": "assi',
                            200, media_type="application/json")
        self._end(record, "drop", 200)  # "drop": half a body, then the connection goes away
        return StreamingResponse(_half_then_die(), 200, headers={"content-length": "4096"},
                                 media_type="application/json")


class _AsciiJSONResponse(JSONResponse):
    """JSON with \\u escapes, so a responder can send any string, lone surrogates included
    (as a hostile server might)."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


async def _half_then_die():
    yield b'{"id": "chatcmpl-dropped", "choices": ['
    raise ConnectionAbortedError("injected dropped connection")


async def _sleep_unless_disconnected(request: Request, seconds: float) -> bool:
    """Sleep `seconds`; False as soon as the client has disconnected."""

    async def disconnected():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    waiter = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=seconds)
        return not done
    finally:
        waiter.cancel()


class _Metered:
    """ASGI wrapper counting chat requests in flight (until the last body byte is handed over)."""

    def __init__(self, app, stub: OpenAIStub):
        self.app, self.stub = app, stub

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            with self.stub._lock:
                self.stub._http_log.append((scope["method"], scope["path"]))
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        self.stub._enter()
        done = False

        def leave():
            nonlocal done
            if not done:
                done = True
                self.stub._leave()

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.disconnect":
                leave()
            return message

        async def counted_send(message):
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                leave()
            await send(message)

        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            leave()
