"""The web app over HTTP (in process): tokens, admin protection, headers, idempotent submits."""

import re

import pytest
from fastapi.testclient import TestClient

from easylm_imitate.evaluation import rating
from easylm_imitate.evaluation.rating.app import CSP
from rating.rating_helpers import ADMIN, assignment_id, write_pairs

ADMIN_PATHS = ["/admin", "/admin/results.json", "/admin/progress.json", "/admin/export.csv"]


@pytest.fixture
def study(tmp_path):
    db = str(tmp_path / "s.sqlite")
    pairs = write_pairs(tmp_path / "p.jsonl", [
        {"id": f"q{k}", "prompt": f"Question {k}?", "outputs": {"secret-imitation-name": f"model says {k}",
                                                              "secret-target-name": f"target says {k}"}}
        for k in range(3)])
    rating.load_study(db, pairs, reference="secret-target-name")
    tokens = [link.rsplit("/", 1)[1] for link in rating.invite(db, 2, "http://x")]
    with TestClient(rating.create_app(db, ADMIN)) as client:
        yield client, tokens


def test_rater_page_is_blind_and_carries_a_strict_csp(study):
    client, (t1, _) = study
    page = client.get(f"/rate/{t1}")
    assert page.status_code == 200
    assert "Question 0?" in page.text and "model says 0" in page.text and "target says 0" in page.text
    assert "secret-imitation-name" not in page.text and "secret-target-name" not in page.text
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert page.headers["referrer-policy"] == "no-referrer"
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/rate.js">']  # no inline code
    assert not re.search(r"\son[a-z]+\s*=", page.text) and "style=" not in page.text  # no handlers, styles
    assert client.get("/rate/not-a-token").status_code == 404


def test_submit_is_idempotent_and_moves_on(study):
    client, (t1, _) = study
    first = assignment_id(client.get(f"/rate/{t1}").text)
    for choice in ("A", "B"):  # a double submit: the second answer changes nothing
        r = client.post(f"/rate/{t1}/submit", data={"assignment": first, "choice": choice}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/rate/{t1}?note=saved"
    page = client.get(f"/rate/{t1}?note=saved").text
    assert assignment_id(page) != first and "Rated: <strong>1</strong>" in page
    rows = client.get("/admin/export.csv", headers={"Authorization": f"Bearer {ADMIN}"}).text.splitlines()
    assert len(rows) == 2 and rows[1].split(",")[2] == "A"
    assert client.post(f"/rate/{t1}/submit", data={"assignment": first, "choice": "maybe"}).status_code == 400


def test_a_rater_token_cannot_reach_another_raters_assignments(study):
    client, (t1, t2) = study
    mine = assignment_id(client.get(f"/rate/{t1}").text)
    assert client.get(f"/rate/{t1}/item/{mine}").status_code == 200
    assert client.get(f"/rate/{t2}/item/{mine}").status_code == 404
    r = client.post(f"/rate/{t2}/submit", data={"assignment": mine, "choice": "A"})
    assert r.status_code == 404
    assert client.post(f"/rate/{t2}/submit", data={"assignment": "x", "choice": "A"}).status_code == 404
    assert client.get(f"/rate/{t1}/admin").status_code == 404


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_admin_pages_need_the_admin_token(study, path):
    client, (t1, _) = study
    assert client.get(path).status_code == 403
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get(path, params={"token": t1}).status_code == 403  # a rater token is not enough
    assert client.get(path, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200


def test_admin_token_in_the_query_sets_a_cookie_for_the_admin_pages(study):
    client, _ = study
    r = client.get("/admin", params={"token": ADMIN})
    assert r.status_code == 200 and "secret-imitation-name" in r.text
    assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
    assert client.get("/admin/results.json").json()["benchmark"] == "crowd_rating"
    client.cookies.clear()
    assert client.get("/admin/results.json").status_code == 403
