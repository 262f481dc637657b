"""Killing the server (SIGKILL) mid-study and restarting it keeps every rating and assignment."""

import signal

import httpx

from rating.rating_helpers import ADMIN, assignment_id, rate_cli, server, write_pairs

AUTH = {"Authorization": f"Bearer {ADMIN}"}


def submit(base, token, a_id, choice):
    r = httpx.post(f"{base}/rate/{token}/submit", data={"assignment": a_id, "choice": choice})
    assert r.status_code == 303, r.text


def test_kill_and_restart_loses_nothing(tmp_path):
    db = str(tmp_path / "ratings.sqlite")
    pairs = write_pairs(tmp_path / "pairs.jsonl", [
        {"id": f"q{k}", "prompt": f"p{k}", "outputs": {"m": f"model {k}", "t": f"target {k}"}} for k in range(3)])
    with server(db, f"--pairs={pairs}", "--reference=t", "--ratings_per_item=2") as (base, proc):
        t1, t2 = (l.rsplit("/", 1)[1] for l in rate_cli("invite", f"--db={db}", "--n=2").stdout.split())
        rated = []
        for choice in ("A", "equal"):
            page = httpx.get(f"{base}/rate/{t1}").text
            rated.append(assignment_id(page))
            submit(base, t1, rated[-1], choice)
        open_id = assignment_id(httpx.get(f"{base}/rate/{t2}").text)  # shown, not yet answered
        before = httpx.get(f"{base}/admin/export.csv", headers=AUTH).text
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(before.splitlines()) == 3
    with server(db) as (base, _):  # no --pairs: the study comes from the database
        assert httpx.get(f"{base}/admin/export.csv", headers=AUTH).text == before
        progress = httpx.get(f"{base}/admin/progress.json", headers=AUTH).json()
        assert [(r["rated"], r["open"]) for r in progress["raters"]] == [(2, 0), (0, 1)]
        assert assignment_id(httpx.get(f"{base}/rate/{t2}").text) == open_id  # same item, same sides
        submit(base, t1, rated[0], "B")  # a repeat after the restart is still a no-op
        # finish the study: every item gets exactly 2 ratings
        for token in (t1, t2):
            while 'name="assignment"' in (page := httpx.get(f"{base}/rate/{token}").text):
                submit(base, token, assignment_id(page), "A")
    record = rate_cli("results", f"--db={db}").stdout
    assert '"n": 3' in record and '"ratings": 6' in record
    rate_cli("export", f"--db={db}", f"--out={tmp_path / 'r.csv'}")
    rows = open(tmp_path / "r.csv").read().splitlines()
    assert len(rows) == 7 and set(before.splitlines()) <= set(rows)
