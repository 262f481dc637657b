"""OpenAI-compatible HTTP server over an `Engine`: chat, completions (echo + logprobs),
models and health, with SSE streaming and OpenAI-style error bodies for every bad request."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from easylm_imitate.inference.batcher import Batcher
from easylm_imitate.inference.engine import Engine, GenRequest, GenResult
from easylm_imitate.inference.http_runner import free_port, make_server, running_server
from easylm_imitate.inference.inflight import CLIENT_CLOSED, ClientGone, run_job, submit, wait_for_client
from easylm_imitate.inference.logprobs import chat_logprobs, completion_logprobs, token_logprobs
from easylm_imitate.inference.protocol import (MAX_STOP, APIError, ChatCompletionRequest, CompletionRequest,
                                               error_body)
from easylm_imitate.inference.prompt_size import prompt_byte_limit, utf8_size
from easylm_imitate.inference.sampling import SamplingParams

log = logging.getLogger(__name__)


__all__ = ["Limits", "create_app", "free_port", "running_server", "serve_checkpoint"]


class Limits:
    """Request limits: longest prompt, largest max_tokens, rows per batch, waiting requests.

    `max_prompt_bytes`: text prompts above this many UTF-8 bytes are refused before
    tokenisation; None derives it from the token limit (see `prompt_size.prompt_byte_limit`).
    `max_queue`: requests waiting for the model beyond the running batch; more get 429.
    """

    def __init__(self, max_prompt_tokens: int = 2048, max_tokens: int = 1024, max_batch: int = 16,
                 wait_ms: float = 5.0, max_prompt_bytes: int | None = None, max_queue: int = 64):
        self.max_prompt_tokens, self.max_tokens = max_prompt_tokens, max_tokens
        self.max_batch, self.wait_ms = max_batch, wait_ms
        self.max_prompt_bytes = max_prompt_bytes
        self.max_queue = max_queue


def create_app(engine: Engine, model_name: str, limits: Limits | None = None) -> FastAPI:
    """The FastAPI application serving `engine` under the model id `model_name`."""
    limits = limits or Limits()
    app = FastAPI(title="easylm_imitate", docs_url=None, redoc_url=None)
    batcher = Batcher(engine, max_batch=limits.max_batch, wait_ms=limits.wait_ms, max_queue=limits.max_queue)
    app.state.batcher = batcher
    app.router.add_event_handler("shutdown", batcher.close)
    created = int(time.time())
    prompt_bytes = limits.max_prompt_bytes or prompt_byte_limit(
        min(limits.max_prompt_tokens, engine.context_length), engine.tokenizer)

    def check_prompt_size(texts: list[str], param: str) -> None:
        """Refuse text too large to fit the token limit by its byte size, before tokenising it."""
        size = utf8_size(texts)
        if size > prompt_bytes:
            raise APIError(400, f"{param}: {size} bytes of text; this server accepts at most {prompt_bytes} "
                           f"bytes (max_prompt_bytes) and {limits.max_prompt_tokens} tokens", param=param,
                           code="context_length_exceeded")

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, e: ClientGone):
        return JSONResponse(error_body("the client disconnected"), status_code=CLIENT_CLOSED)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        if err.get("type") == "json_invalid":
            return JSONResponse(error_body(_json_error_message(e.body, err), code="json_invalid"), status_code=400)
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {err['msg']}" if param else err["msg"]
        return JSONResponse(error_body(message, param=param, code=err.get("type")), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException):
        return JSONResponse(error_body(str(e.detail), code=str(e.status_code)), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception):
        log.exception("request failed")
        return JSONResponse(error_body(f"internal error: {e}", type="server_error"), status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "queued": batcher.queued, "running": batcher.running}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "easylm_imitate"}]}

    def check_common(req) -> list[str]:
        if req.model != model_name:
            raise APIError(404, f"model {req.model!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        stops = req.stop_list()
        if len(stops) > MAX_STOP:
            raise APIError(400, f"stop: at most {MAX_STOP} stop strings", param="stop")
        return stops

    def check_lengths(prompt_len: int, max_tokens: int, field: str = "max_tokens") -> None:
        """Refuse a prompt or reply length out of bounds; `field` is the name the client gave
        the reply length."""
        if prompt_len == 0:
            raise APIError(400, "prompt is empty", param="prompt")
        if prompt_len > limits.max_prompt_tokens:
            raise APIError(400, f"prompt has {prompt_len} tokens; this server accepts at most "
                           f"{limits.max_prompt_tokens}", param="prompt", code="context_length_exceeded")
        if max_tokens > limits.max_tokens:
            raise APIError(400, f"{field}={max_tokens} exceeds this server's limit of {limits.max_tokens}",
                           param=field)
        if prompt_len + max_tokens > engine.context_length:
            raise APIError(400, f"prompt ({prompt_len} tokens) plus {field} ({max_tokens}) exceeds the "
                           f"model's context length {engine.context_length}", param=field,
                           code="context_length_exceeded")

    def rows_for(prompt_ids: list[int], req, max_tokens: int, stops: list[str]) -> list[GenRequest]:
        base = req.seed if req.seed is not None else random.randrange(2 ** 31)
        return [GenRequest(prompt_ids, SamplingParams(max_new_tokens=max_tokens, temperature=req.temperature,
                                                      top_k=req.top_k, top_p=req.top_p,
                                                      seed=(base + j) % 2 ** 32), stops)
                for j in range(req.n)]

    async def run_rows(request: Request, rows: list[GenRequest]) -> list[GenResult]:
        if not rows:
            return []
        return await run_job(request, lambda cancel: batcher.generate(rows, cancel=cancel))

    async def score_results(request: Request | None, prompt_ids: list[list[int]], results: list[GenResult],
                            top: int):
        """Scores of each row's prompt plus everything it generated (end-of-sequence included).
        Only a request that generated nothing can be refused for a full queue (the others
        were admitted already)."""
        seqs = [list(p) + r.generated_ids for p, r in zip(prompt_ids, results, strict=True)]
        bounded = not any(r.generated_ids for r in results)
        return await run_job(request, lambda cancel: batcher.score(seqs, top, cancel=cancel, bounded=bounded))

    def stream_rows(rows: list[GenRequest], chunk_fn, final_fn, logprobs_fn) -> StreamingResponse:
        """SSE: `chunk_fn(None, None)` opens, `chunk_fn(row, text)` per delta; the last chunk of
        each row is `final_fn(row, result, logprobs)` with `await logprobs_fn(None, results)`. A
        client that disconnects cancels the stream, and with it the rows' generation."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue = asyncio.Queue()

        def put(item) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(deltas.put_nowait, item)
        for i, row in enumerate(rows):
            row.on_text = lambda text, i=i: put((i, text))
        future, cancel = submit(lambda cancel: batcher.generate(rows, cancel=cancel))
        future.add_done_callback(lambda _: put(None))

        async def events():
            # Starlette cancels this generator when the client disconnects: `cancel` drops the work.
            try:
                for first in chunk_fn(None, None):
                    yield _sse(first)
                while (item := await deltas.get()) is not None:
                    yield _sse(chunk_fn(*item))
                try:
                    results = await wait_for_client(None, future, cancel)
                    logprobs = await logprobs_fn(None, results)
                except Exception as e:
                    message = e.message if isinstance(e, APIError) else f"generation failed: {e}"
                    yield _sse(error_body(message, type="server_error"))
                else:
                    for i, (result, lp) in enumerate(zip(results, logprobs)):
                        yield _sse(final_fn(i, result, lp))
                yield "data: [DONE]\n\n"
            finally:
                cancel.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest, request: Request):
        stops = check_common(req)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
        check_prompt_size([m["content"] for m in messages], "messages")
        try:
            prompt_ids = await run_in_threadpool(engine.chat_ids, messages)
        except Exception as e:  # template errors (e.g. roles out of order) are the request's fault
            raise APIError(400, f"messages: cannot render the chat template: {e}", param="messages") from None
        room = engine.context_length - len(prompt_ids)
        field = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        max_tokens = req.max_completion_tokens or req.max_tokens or max(1, min(limits.max_tokens, room))
        check_lengths(len(prompt_ids), max_tokens, field)
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
        rows = rows_for(prompt_ids, req, max_tokens, stops)
        rid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "created": now, "model": model_name}

        async def logprobs_of(request: Request | None, results: list[GenResult]) -> list[dict | None]:
            if not req.logprobs:
                return [None] * len(results)
            scores = await score_results(request, [prompt_ids] * len(results), results, req.top_logprobs or 0)
            return [chat_logprobs(token_logprobs(engine, prompt_ids, None, r, s, echo=False))
                    for r, s in zip(results, scores)]
        if req.stream:
            def chunk(i, text):
                if i is None:
                    return [{**head, "object": "chat.completion.chunk", "choices": [
                        {"index": j, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
                        for j in range(len(rows))]
                return {**head, "object": "chat.completion.chunk",
                        "choices": [{"index": i, "delta": {"content": text}, "finish_reason": None}]}

            def final(i, r, lp):
                return {**head, "object": "chat.completion.chunk",
                        "choices": [{"index": i, "delta": {}, "logprobs": lp, "finish_reason": r.finish_reason}]}
            return stream_rows(rows, chunk, final, logprobs_of)
        results = await run_rows(request, rows)
        logprobs = await logprobs_of(request, results)
        completion = sum(len(r.generated_ids) for r in results)
        return {**head, "object": "chat.completion",
                "choices": [{"index": i, "message": {"role": "assistant", "content": r.text},
                             "logprobs": lp, "finish_reason": r.finish_reason}
                            for i, (r, lp) in enumerate(zip(results, logprobs))],
                "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": completion,
                          "total_tokens": len(prompt_ids) + completion}}

    def completion_prompts(req: CompletionRequest) -> list[tuple[list[int], list[str] | None, str]]:
        """(ids, text pieces or None, text) per prompt."""
        p = req.prompt
        if isinstance(p, str):
            p = [p]
        if not p:
            raise APIError(400, "prompt: empty list", param="prompt")
        if isinstance(p[0], int):
            p = [p]
        out = []
        for item in p:
            if isinstance(item, str):
                check_prompt_size([item], "prompt")
                ids, pieces = engine.text_pieces(item)
                out.append((ids, pieces, item))
            else:
                check_lengths(len(item), req.max_tokens)  # before the per-token work below
                bad = [t for t in item if not 0 <= t < engine.cfg.vocab_size]
                if bad:
                    raise APIError(400, f"prompt: token id {bad[0]} is outside the vocabulary "
                                   f"[0, {engine.cfg.vocab_size})", param="prompt")
                pieces = engine.id_pieces(item)
                out.append((list(item), pieces, "".join(pieces)))
        return out

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        stops = check_common(req)
        prompts = await run_in_threadpool(completion_prompts, req)  # tokenising is slow: off the event loop
        for ids, _, _ in prompts:
            check_lengths(len(ids), req.max_tokens)
        if req.stream and req.max_tokens == 0:
            raise APIError(400, "stream needs max_tokens >= 1", param="stream")
        rows = [r for ids, _, _ in prompts for r in rows_for(ids, req, req.max_tokens, stops)] \
            if req.max_tokens > 0 else []
        rid, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "created": now, "model": model_name}

        async def logprobs_of(request: Request | None, results: list[GenResult]) -> list[dict | None]:
            if req.logprobs is None:
                return [None] * len(results)
            rows_prompts = [prompts[i // req.n] for i in range(len(results))]
            scores = await score_results(request, [ids for ids, _, _ in rows_prompts], results, req.logprobs)
            return [completion_logprobs(token_logprobs(engine, ids, pieces, r, s, req.echo))
                    for (ids, pieces, _), r, s in zip(rows_prompts, results, scores)]

        if req.stream:
            def chunk(i, text):
                if i is None:
                    return [] if not req.echo else [
                        {**head, "object": "text_completion", "choices": [
                            {"index": j, "text": prompts[j // req.n][2], "logprobs": None, "finish_reason": None}]}
                        for j in range(len(rows))]
                return {**head, "object": "text_completion",
                        "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": None}]}

            def final(i, r, lp):
                return {**head, "object": "text_completion",
                        "choices": [{"index": i, "text": "", "logprobs": lp, "finish_reason": r.finish_reason}]}
            return stream_rows(rows, chunk, final, logprobs_of)
        results = await run_rows(request, rows)
        if not results:  # max_tokens == 0: one empty completion per (prompt, n)
            results = [GenResult("", [], "length") for _ in prompts for _ in range(req.n)]
        logprobs = await logprobs_of(request, results)
        choices = [{"index": i, "text": (prompts[i // req.n][2] + r.text) if req.echo else r.text,
                    "logprobs": lp, "finish_reason": r.finish_reason}
                   for i, (r, lp) in enumerate(zip(results, logprobs))]
        prompt_tokens = sum(len(ids) for ids, _, _ in prompts)
        completion = sum(len(r.generated_ids) for r in results)
        return {**head, "object": "text_completion", "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                          "total_tokens": prompt_tokens + completion}}

    return app


def _sse(payload) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def serve_checkpoint(checkpoint: str, *, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
                     mesh: str | None = None, rules: str = "fsdp_tp", dtype: str | None = None,
                     limits: Limits | None = None, warmup: tuple[list[int], list[int]] | None = None) -> None:
    """Load a checkpoint (optionally sharded on a mesh) and serve it until interrupted (SIGTERM
    or Ctrl-C stop it within seconds). `warmup`: (prompt lengths, reply lengths) to compile
    before the port opens (see `warm_up`)."""
    import easylm_imitate
    from easylm_imitate import parallel

    device_mesh = parallel.make_mesh(mesh) if mesh else None
    overrides = {"dtype": dtype} if dtype else {}
    model, tokenizer = easylm_imitate.load(checkpoint, mesh=device_mesh, rules=rules, **overrides)
    engine = Engine(model, tokenizer, device_mesh)
    name = model_name or os.path.basename(os.path.normpath(checkpoint))
    if warmup is not None:
        warm_up(engine, limits or Limits(), *warmup)
    app = create_app(engine, name, limits)
    log.info("serving %s as %r on http://%s:%d", checkpoint, name, host, port)
    make_server(app, host, port).run()


def warm_up(engine: Engine, limits: Limits, prompt_tokens: list[int], max_tokens: list[int]) -> None:
    """Compile greedy generation for one row and for `limits.max_batch` rows, at each prompt
    length and reply length given (capped at the server's limits), before serving; each
    shape is logged as it compiles."""
    start = time.perf_counter()
    prompt_tokens = [min(p, limits.max_prompt_tokens, engine.context_length - 1) for p in prompt_tokens]
    max_tokens = [min(m, limits.max_tokens) for m in max_tokens]
    shapes = engine.warmup(rows=[1, limits.max_batch], prompt_tokens=prompt_tokens, max_tokens=max_tokens)
    log.info("warmup: compiled %d shapes (batch, prompt, new tokens) %s in %.1f s", len(shapes), shapes,
             time.perf_counter() - start)


def _json_error_message(doc, err: dict) -> str:
    """'invalid JSON ...' with the line and column of the error in the request body."""
    loc = err.get("loc") or ()
    pos = loc[-1] if loc and isinstance(loc[-1], int) else 0
    if isinstance(doc, bytes | bytearray):
        doc = doc.decode("utf-8", "replace")
    doc = doc if isinstance(doc, str) else ""
    line = doc.count("\n", 0, pos) + 1
    column = pos - doc.rfind("\n", 0, pos)
    reason = (err.get("ctx") or {}).get("error", err.get("msg", "cannot parse"))
    return f"invalid JSON in the request body at line {line}, column {column}: {reason}"
