"""The rating web app (FastAPI): rater pages under /rate/<token>, admin pages under /admin.

Raters see neither system names nor other raters' work; admin pages need the admin token
(`Authorization: Bearer <token>`, `?token=<token>` once, then a same-site cookie). Every
response carries a strict Content-Security-Policy: scripts and styles only from /static.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import urllib.parse
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from easylm_imitate.evaluation.rating import aggregate, assign, export, store
from easylm_imitate.evaluation.rating.render import markdown_to_safe_html

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'; object-src 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
NOTES = {"full": "Other raters completed that item meanwhile, so your answer was not needed. Here is another one.",
         "saved": "Saved."}
ADMIN_COOKIE = "rating_admin"

_HERE = resources.files("easylm_imitate.evaluation.rating")


def create_app(db_path: str | os.PathLike, admin_token: str, lease_s: float = assign.DEFAULT_LEASE_S) -> FastAPI:
    """The app serving the study stored in `db_path` (which must already hold a study)."""
    db_path = os.fspath(db_path)
    with contextlib.closing(store.connect(db_path)) as conn:
        study = store.read_study(conn)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.filters["markdown"] = lambda text: Markup(markdown_to_safe_html(text))
    app = FastAPI(title="easylm_imitate rating", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @contextlib.contextmanager
    def db():
        conn = store.connect(db_path)
        try:
            yield conn
        finally:
            conn.close()

    def rater(conn, token: str) -> int:
        rater_id = store.rater_id_for(conn, token)
        if rater_id is None:
            raise HTTPException(404, "unknown rater link")
        return rater_id

    def rate_page(request: Request, token: str, assignment, done: int, left: int, note: str | None):
        return templates.TemplateResponse(request, "rate.html", {
            "token": token, "a": assignment, "done": done, "left": left, "note": NOTES.get(note or ""),
        })

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz():
        return "ok"

    @app.get("/rate/{token}", response_class=HTMLResponse)
    def rate(request: Request, token: str, note: str | None = None):
        with db() as conn:
            rater_id = rater(conn, token)
            assignment = assign.next_assignment(conn, rater_id, study, lease_s=lease_s)
            done, left = assign.progress(conn, rater_id, study)
        if assignment is None:
            return templates.TemplateResponse(request, "done.html", {"done": done})
        return rate_page(request, token, assignment, done, left, note)

    @app.get("/rate/{token}/item/{assignment_id}", response_class=HTMLResponse)
    def rate_item(request: Request, token: str, assignment_id: int):
        with db() as conn:
            rater_id = rater(conn, token)
            assignment = assign.get_assignment(conn, rater_id, assignment_id)
            if assignment is None:
                raise HTTPException(404, "no such assignment for this rater")
            done, left = assign.progress(conn, rater_id, study)
        return rate_page(request, token, assignment, done, left, None)

    def record(token: str, assignment_id: str, choice: str) -> str:
        with db() as conn:
            rater_id = rater(conn, token)
            try:
                return assign.submit(conn, rater_id, int(assignment_id), choice, study)
            except (KeyError, ValueError) as e:
                if isinstance(e, KeyError) or not assignment_id.isdigit():
                    raise HTTPException(404, "no such assignment for this rater") from None
                raise HTTPException(400, str(e)) from None

    @app.post("/rate/{token}/submit")
    async def submit(request: Request, token: str):
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        assignment_id = form.get("assignment", [""])[0]
        choice = form.get("choice", [""])[0]
        status = await run_in_threadpool(record, token, assignment_id, choice)
        note = "full" if status == "full" else "saved"
        return RedirectResponse(f"/rate/{token}?note={note}", status_code=303)

    def require_admin(request: Request) -> bool:
        """True if the request carries the admin token in the query (a cookie should be set)."""
        header = request.headers.get("authorization", "")
        candidates = [header[7:] if header.lower().startswith("bearer ") else "",
                      request.cookies.get(ADMIN_COOKIE, ""), request.query_params.get("token", "")]
        for i, candidate in enumerate(candidates):
            if candidate and secrets.compare_digest(candidate.encode(), admin_token.encode()):
                return i == 2
        raise HTTPException(403, "admin token required")

    def with_cookie(response: Response, from_query: bool) -> Response:
        if from_query:
            response.set_cookie(ADMIN_COOKIE, admin_token, httponly=True, samesite="strict", path="/admin")
        return response

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request):
        from_query = require_admin(request)
        with db() as conn:
            context = {"study": study, "items": aggregate.item_stats(conn), "raters": aggregate.rater_stats(conn),
                       "results": aggregate.summarize(conn)}
        return with_cookie(templates.TemplateResponse(request, "admin.html", context), from_query)

    @app.get("/admin/results.json")
    def admin_results(request: Request):
        from_query = require_admin(request)
        with db() as conn:
            return with_cookie(JSONResponse(aggregate.summarize(conn)), from_query)

    @app.get("/admin/progress.json")
    def admin_progress(request: Request):
        from_query = require_admin(request)
        with db() as conn:
            body = {"items": aggregate.item_stats(conn), "raters": aggregate.rater_stats(conn)}
        return with_cookie(JSONResponse(body), from_query)

    @app.get("/admin/export.csv")
    def admin_export(request: Request):
        from_query = require_admin(request)
        with db() as conn:
            text = export.ratings_csv(conn)
        response = PlainTextResponse(text, media_type="text/csv",
                                     headers={"Content-Disposition": 'attachment; filename="ratings.csv"'})
        return with_cookie(response, from_query)

    return app
