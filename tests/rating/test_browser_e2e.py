"""End to end in a real headless chromium: three raters rate a pairs file through the page,
then `rate.py results` gives the expected majority votes and rates; hostile model output
renders as text and runs nothing."""

import csv
import json
import os
import re

import pytest

from easylm_imitate.evaluation import results as results_lib
from rating.rating_helpers import chromium, rate_cli, server, write_pairs

XSS_MODEL = ("MODEL-q4 <script>window.__pwned='script';alert('script')</script>\n\n"
             "<img src=x onerror=\"window.__pwned='img';alert('img')\">\n\n"
             "[click me](javascript:window.__pwned='link';alert('link'))")
XSS_REFERENCE = "REFERENCE-q4 <a href=\"javascript:alert('a')\">raw link</a> <svg onload=\"alert('svg')\"></svg>"
RECORDS = [
    {"id": "q1", "prompt": "Item q1: list two fruits", "outputs": {
        "imit-sys": "MODEL-q1\n\n- **apple**\n- pear", "ref-sys": "REFERENCE-q1 apple and pear"}},
    {"id": "q2", "prompt": "Item q2: write code", "outputs": {
        "imit-sys": "MODEL-q2\n```\nprint('hi')\n```", "ref-sys": "REFERENCE-q2 `print(1)`"}},
    {"id": "q3", "prompt": "Item q3: capital of France?", "outputs": {
        "imit-sys": "MODEL-q3 Paris", "ref-sys": "REFERENCE-q3 It is Paris."}},
    {"id": "q4", "prompt": "Item q4: <script>window.__pwned='prompt'</script>", "outputs": {
        "imit-sys": XSS_MODEL, "ref-sys": XSS_REFERENCE}},
]
# The model's outcome (win/tie/loss) each rater is to give, by item.
PLAN = {"q1": ["win", "win", "loss"], "q2": ["loss", "loss", "tie"],
        "q3": ["win", "tie", "loss"], "q4": ["tie", "tie", "tie"]}
KEYS = [{"A": "1", "B": "2", "equal": "3"}, {"A": "a", "B": "b", "equal": "e"}, None]  # rater 3 taps
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}


def choice_for(outcome, model_is_a):
    if outcome == "tie":
        return "equal"
    return "A" if (outcome == "win") == model_is_a else "B"


def check_hostile_output_is_inert(page, dialogs):
    model_side = "#output-a" if "MODEL-q4" in page.inner_text("#output-a") else "#output-b"
    text = page.inner_text(model_side)
    assert "<script>window.__pwned='script'" in text
    assert "<img src=x onerror=" in text and "[click me](javascript:" in text
    assert "<script>window.__pwned='prompt'</script>" in page.inner_text("#prompt")
    assert page.locator(".md script, .md img, .md svg, .md iframe, .md [onerror], .md [onload]").count() == 0
    assert page.locator("a[href^='javascript' i]").count() == 0
    page.get_by_text("[click me]", exact=False).first.click()
    page.get_by_text("raw link", exact=False).first.click()
    assert page.evaluate("window.__pwned") is None
    assert dialogs == []


def rate_everything(page, link, rater, dialogs):
    """Rate every item offered to this rater through the page; returns the item ids seen."""
    response = page.goto(link)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    seen = []
    while page.locator("#done").count() == 0:
        item = re.search(r"Item (q\d)", page.inner_text("#prompt")).group(1)
        assert page.inner_text("#progress").startswith(f"Rated: {len(seen)}")
        html = page.content()
        assert "imit-sys" not in html and "ref-sys" not in html
        if item == "q4":
            check_hostile_output_is_inert(page, dialogs)
        choice = choice_for(PLAN[item][rater], "MODEL-" in page.inner_text("#output-a"))
        with page.expect_navigation():
            if KEYS[rater]:
                page.keyboard.press(KEYS[rater][choice])
            else:
                button = page.locator(f"#choose-{choice.lower()}")
                assert button.is_visible()
                button.tap()
        seen.append(item)
    return seen


def test_three_raters_in_a_browser_then_results(tmp_path):
    db = str(tmp_path / "ratings.sqlite")
    pairs = write_pairs(tmp_path / "pairs.jsonl", RECORDS)
    shots = os.environ.get("RATING_SCREENSHOTS")
    with server(db, f"--pairs={pairs}", "--reference=ref-sys") as (base, _), chromium() as browser:
        links = rate_cli("invite", f"--db={db}", "--n=3", f"--base_url={base}").stdout.split()
        assert len(links) == 3 and all(l.startswith(base + "/rate/") for l in links)
        for rater, link in enumerate(links):
            context = browser.new_context(**(PHONE if KEYS[rater] is None else {"viewport": {"width": 1280, "height": 800}}))
            page = context.new_page()
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            if shots and rater in (0, 2):
                page.goto(link)
                page.screenshot(path=os.path.join(shots, f"rater_{'phone' if rater == 2 else 'desktop'}.png"))
            if KEYS[rater] is None:
                page.goto(link)
                assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            assert sorted(rate_everything(page, link, rater, dialogs)) == ["q1", "q2", "q3", "q4"]
            assert "You rated <strong>4</strong> items" in page.content()
            context.close()
    out = tmp_path / "crowd.json"
    printed = json.loads(rate_cli("results", f"--db={db}", f"--out={out}").stdout)
    record = results_lib.read_results(out)
    assert printed == record
    assert (record["benchmark"], record["model"], record["reference"], record["n"]) == ("crowd_rating", "imit-sys", "ref-sys", 4)
    m = record["metrics"]
    # majorities: q1 win, q2 loss, q3 3-way split -> tie, q4 tie
    assert m["equal_or_better_mean"] == pytest.approx(0.75) and m["equal_or_better_std"] == pytest.approx(0.5)
    assert (m["win"], m["tie"], m["loss"]) == (0.25, 0.5, 0.25)
    assert m["fleiss_kappa"] == pytest.approx(5 / 47)
    rate_cli("export", f"--db={db}", f"--out={tmp_path / 'ratings.csv'}")
    rows = list(csv.DictReader(open(tmp_path / "ratings.csv")))
    assert len(rows) == 12
    for item, plan in PLAN.items():
        assert sorted(r["outcome"] for r in rows if r["item_id"] == item) == sorted(plan)
