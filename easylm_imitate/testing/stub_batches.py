"""The OpenAI Batch API of the loopback stub: `/v1/files` and `/v1/batches`.

    POST /v1/files (multipart: file, purpose)   GET /v1/files/{id}   GET /v1/files/{id}/content
    POST /v1/batches   GET /v1/batches (newest first, `after`/`limit`)   GET /v1/batches/{id}
    POST /v1/batches/{id}/cancel

A batch is "in_progress" until `batch_seconds` after its creation; the first retrieve after that
runs every line through the stub's responder (lines answered are billed on the "batch" channel),
writes the output and error files in the OpenAI format and ends the batch "completed" (or
"expired" when some line got a ``line_expired`` fault). Line faults come from the stub's
`batch_faults` plan, asked with the line body and how many times that body was seen in a batch.
"""

from __future__ import annotations

import dataclasses
import email.parser
import email.policy
import json
import threading
import time
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from easylm_imitate.testing.faults import FaultPlan

TERMINAL = ("completed", "expired", "failed", "cancelled")


@dataclasses.dataclass
class StubFile:
    """An uploaded or generated file."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def json(self) -> dict:
        """The OpenAI file object."""
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}


@dataclasses.dataclass
class StubBatch:
    """One batch job."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict | None
    created_at: int
    started: float  # time.monotonic()
    status: str = "in_progress"
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict = dataclasses.field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    errors: list | None = None

    def json(self) -> dict:
        """The OpenAI batch object."""
        return {"id": self.id, "object": "batch", "endpoint": self.endpoint, "input_file_id": self.input_file_id,
                "completion_window": self.completion_window, "status": self.status, "created_at": self.created_at,
                "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
                "request_counts": dict(self.counts), "metadata": self.metadata,
                "errors": None if self.errors is None else {"object": "list", "data": self.errors}}


class BatchStore:
    """Files and batch jobs of one stub, with the line faults and job duration."""

    def __init__(self, stub, faults: FaultPlan, batch_seconds: float):
        """`stub` answers and bills the lines (OpenAIStub.answer / .bill)."""
        self.stub, self.faults, self.batch_seconds = stub, faults, batch_seconds
        self.files: dict[str, StubFile] = {}
        self.jobs: dict[str, StubBatch] = {}
        self.line_attempts: Counter = Counter()
        self._lock = threading.Lock()
        self._next = 0

    def _id(self, prefix: str) -> str:
        self._next += 1
        return f"{prefix}-stub-{self._next}"

    def add_file(self, filename: str, purpose: str, data: bytes) -> StubFile:
        """Store a file; returns it."""
        with self._lock:
            f = StubFile(self._id("file"), filename, purpose, data, int(time.time()))
            self.files[f.id] = f
            return f

    def create(self, body: dict) -> StubBatch:
        """Create a batch job from a create request body (validated by the caller)."""
        with self._lock:
            job = StubBatch(self._id("batch"), body["input_file_id"], body["endpoint"], body["completion_window"],
                            body.get("metadata"), int(time.time()), time.monotonic())
            self.jobs[job.id] = job
            return job

    def advance(self, job: StubBatch) -> None:
        """Run the job's lines once its time is up (idempotent)."""
        with self._lock:
            if job.status in TERMINAL or time.monotonic() - job.started < self.batch_seconds:
                return
            out, err, expired = [], [], False
            lines = self.files[job.input_file_id].data.decode("utf-8").splitlines()
            for n, raw in enumerate(line for line in lines if line.strip()):
                line = json.loads(raw)
                body, cid = line.get("body") or {}, line.get("custom_id")
                key = json.dumps(body, sort_keys=True)
                self.line_attempts[key] += 1
                fault = self.faults.choose(body, self.line_attempts[key])
                rid = f"batch_req_{job.id}_{n}"
                if fault is not None and fault.kind == "line_expired":
                    expired = True
                    err.append({"id": rid, "custom_id": cid, "response": None, "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion window expired."}})
                elif fault is not None and fault.kind == "line_failed":
                    err.append({"id": rid, "custom_id": cid, "error": None, "response": {
                        "status_code": 500, "request_id": rid,
                        "body": {"error": {"message": "internal error (injected)", "type": "server_error"}}}})
                else:
                    completion = self.stub.answer(body, rid)
                    self.stub.bill("batch", body, completion["usage"])
                    out.append({"id": rid, "custom_id": cid, "error": None,
                                "response": {"status_code": 200, "request_id": rid, "body": completion}})
            job.counts = {"total": len(out) + len(err), "completed": len(out), "failed": len(err)}
            for rows, field, name in ((out, "output_file_id", "output"), (err, "error_file_id", "errors")):
                if rows:
                    data = "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows).encode()
                    f = StubFile(self._id("file"), f"{job.id}_{name}.jsonl", "batch_output", data, int(time.time()))
                    self.files[f.id] = f
                    setattr(job, field, f.id)
            job.status = "expired" if expired else "completed"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": None}}, status)


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, data) of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields = {}
    for part in message.iter_parts():
        fields[part.get_param("name", header="content-disposition")] = (part.get_filename(),
                                                                         part.get_payload(decode=True) or b"")
    return fields


def add_batch_routes(app: FastAPI, stub) -> None:
    """Add the files and batches endpoints of `stub` (an OpenAIStub) to `app`."""
    store: BatchStore = stub.batches

    @app.post("/v1/files")
    async def create_file(request: Request):
        if not stub._authorized(request):
            return _error(401, "invalid api key")
        fields = _multipart(request.headers.get("content-type", ""), await request.body())
        if "file" not in fields or "purpose" not in fields:
            return _error(400, "multipart fields 'file' and 'purpose' are required")
        stored = store.add_file(fields["file"][0] or "upload", fields["purpose"][1].decode(), fields["file"][1])
        await stub._checkpoint("files.created")
        return stored.json()

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str):
        f = store.files.get(file_id)
        return f.json() if f else _error(404, f"no file {file_id}")

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str):
        f = store.files.get(file_id)
        return Response(f.data, media_type="application/octet-stream") if f else _error(404, f"no file {file_id}")

    @app.post("/v1/batches")
    async def create_batch(request: Request):
        if not stub._authorized(request):
            return _error(401, "invalid api key")
        body = json.loads(await request.body())
        if body.get("input_file_id") not in store.files:
            return _error(400, f"no input file {body.get('input_file_id')!r}")
        if body.get("endpoint") != "/v1/chat/completions" or not body.get("completion_window"):
            return _error(400, "endpoint must be /v1/chat/completions and completion_window is required")
        await stub._checkpoint("batches.create")
        job = store.create(body)
        await stub._checkpoint("batches.created")
        return job.json()

    @app.get("/v1/batches")
    async def list_batches(after: str | None = None, limit: int = 20):
        jobs = sorted(store.jobs.values(), key=lambda j: j.id.rsplit("-", 1)[1].zfill(12), reverse=True)
        if after is not None:
            ids = [j.id for j in jobs]
            jobs = jobs[ids.index(after) + 1:] if after in ids else []
        page = jobs[:limit]
        return {"object": "list", "data": [j.json() for j in page], "has_more": len(jobs) > limit,
                "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None}

    @app.get("/v1/batches/{batch_id}")
    async def retrieve_batch(batch_id: str):
        job = store.jobs.get(batch_id)
        if job is None:
            return _error(404, f"no batch {batch_id}")
        await stub._checkpoint("batches.retrieve")
        store.advance(job)
        return job.json()

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(batch_id: str):
        job = store.jobs.get(batch_id)
        if job is None:
            return _error(404, f"no batch {batch_id}")
        if job.status not in TERMINAL:
            job.status = "cancelled"
        return job.json()
