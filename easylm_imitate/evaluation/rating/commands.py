"""What `eval/rate.py` does, callable from Python: load a study, serve, invite, results, export."""

from __future__ import annotations

import contextlib
import os
import sys

from easylm_imitate.evaluation import results as results_lib
from easylm_imitate.evaluation.rating import aggregate, export, store
from easylm_imitate.evaluation.rating.pairs import load_pairs
from easylm_imitate.fileio import write_jsonl_atomic

DEFAULT_RATINGS_PER_ITEM = 3


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_study(db: str, pairs: str | None = None, reference: str | None = None, model: str | None = None,
               ratings_per_item: int | None = None, rejects: str | None = None) -> store.Study:
    """Create or extend the study in `db` from a pairs file (when given) and return it.

    The first load fixes reference, model and ratings per item; later loads only add items
    whose ids are new. Bad records go to `rejects` (default `<db>.rejects.jsonl`) with file,
    line and reason, and the rest are loaded.
    """
    with contextlib.closing(store.connect(db)) as conn:
        if pairs is None:
            study = store.read_study(conn)
            store.init_study(conn, reference, model, ratings_per_item)  # flags must agree
            return study
        try:
            stored = store.read_study(conn)
        except store.StudyError:
            stored = None
        reference = reference or (stored.reference if stored else None)
        if not reference:
            raise store.StudyError("--reference is required to create a study (the target system's name)")
        data = load_pairs(pairs, reference, model or (stored.model if stored else None))
        if not data.items and stored is None:
            raise store.StudyError(f"{pairs}: no usable record ({len(data.rejects)} set aside"
                                   + (f"; first: {data.rejects[0]['line']}: {data.rejects[0]['reason']}" if data.rejects else "")
                                   + ")")
        if ratings_per_item is None and stored is None:
            ratings_per_item = DEFAULT_RATINGS_PER_ITEM
        study = store.init_study(conn, reference, data.model, ratings_per_item)
        added, conflicts = store.add_items(conn, data.items)
        bad = data.rejects + [{"file": pairs, "id": item.id, "reason": reason} for item, reason in conflicts]
        _log(f"{pairs}: {added} new items, {len(data.items) - added - len(conflicts)} already in the study, "
             f"{len(bad)} set aside; study has {store.count_items(conn)} items "
             f"({study.model} vs reference {study.reference}, {study.ratings_per_item} ratings each)")
        if bad:
            rejects = rejects or os.fspath(db) + ".rejects.jsonl"
            write_jsonl_atomic(rejects, bad)
            for r in bad[:10]:
                _log(f"  set aside: {r['file']}:{r.get('line', r.get('id'))}: {r['reason']}")
            _log(f"  all {len(bad)} in {rejects}")
        return study


def invite(db: str, n: int, base_url: str) -> list[str]:
    """Create `n` raters; returns one rater link per rater (<base_url>/rate/<token>)."""
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    with contextlib.closing(store.connect(db)) as conn:
        store.read_study(conn)
        tokens = store.create_raters(conn, n)
    return [f"{base_url.rstrip('/')}/rate/{t}" for t in tokens]


def resolve_admin_token(db: str, given: str | None) -> tuple[str, bool]:
    """The admin token (flag, else $EASYLM_RATING_ADMIN_TOKEN, else stored, else new); see store."""
    with contextlib.closing(store.connect(db)) as conn:
        return store.admin_token(conn, given)


def serve(db: str, host: str = "127.0.0.1", port: int = 8000, admin_token: str | None = None,
          lease_s: float | None = None) -> None:
    """Run the rating server for the study in `db` until interrupted."""
    import uvicorn

    from easylm_imitate.evaluation.rating.app import create_app

    token, generated = resolve_admin_token(db, admin_token)
    kwargs = {} if lease_s is None else {"lease_s": lease_s}
    app = create_app(db, token, **kwargs)
    shown = token if generated else "<your admin token>"
    _log(f"admin page: http://{host}:{port}/admin?token={shown}")
    if generated:
        _log(f"generated admin token (stored in {db}): {token}")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def results(db: str, out: str | None) -> dict:
    """Aggregate the ratings into a results record; write it to `out` (atomically) when given."""
    with contextlib.closing(store.connect(db)) as conn:
        record = aggregate.summarize(conn)
    if out:
        results_lib.write_results(out, record)
    return record


def export_csv(db: str, out: str) -> int:
    """Write every rating as CSV to `out`; returns the number of ratings."""
    with contextlib.closing(store.connect(db)) as conn:
        return export.write_ratings_csv(conn, out)
