"""Aggregation: majority vote with the split rule (any R), equal-or-better rate, Fleiss' kappa."""

import contextlib
import math

import pytest

from easylm_imitate.evaluation import results as results_lib
from easylm_imitate.evaluation.rating import aggregate, assign, export, store
from easylm_imitate.evaluation.rating.pairs import Item


@pytest.mark.parametrize("votes,expected", [
    (["win", "win", "loss"], ("win", True)),
    (["tie", "loss", "loss"], ("loss", True)),
    (["win", "tie", "loss"], ("tie", False)),  # 3-way split
    (["win", "win", "loss", "loss"], ("tie", False)),
    (["tie", "tie", "tie"], ("tie", True)),
    # R=2: a split is decided by wins minus losses; "equal" never lifts a "worse" to "equal or better"
    (["loss", "tie"], ("loss", False)), (["tie", "loss"], ("loss", False)),
    (["win", "tie"], ("win", False)), (["win", "loss"], ("tie", False)), (["tie", "tie"], ("tie", True)),
    # R=4 splits
    (["tie", "tie", "loss", "loss"], ("loss", False)), (["win", "tie", "win", "tie"], ("win", False)),
])
def test_majority(votes, expected):
    assert aggregate.majority(votes) == expected


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert aggregate.fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)
    assert aggregate.fleiss_kappa([[3, 0, 0], [0, 3, 0]]) == pytest.approx(1.0)
    assert aggregate.fleiss_kappa([[3, 0, 0], [3, 0, 0]]) is None  # one category only: undefined
    with pytest.raises(ValueError):
        aggregate.fleiss_kappa([[3, 0, 0], [1, 1, 0]])


# outcome per rater (win/tie/loss for the model) for each item; i4 stays incomplete.
PLAN = {"i0": ["win", "win", "loss"], "i1": ["loss", "loss", "tie"], "i2": ["win", "tie", "loss"],
        "i3": ["tie", "tie", "tie"], "i4": ["win"]}


def choice_for(outcome, a_is_model):
    if outcome == "tie":
        return "equal"
    return ("A" if a_is_model else "B") if outcome == "win" else ("B" if a_is_model else "A")


@contextlib.contextmanager
def study_rated_as(path, plans, ratings_per_item):
    """A study whose rater number `slot` gave item `id` the outcome plans[id][slot]."""
    with contextlib.closing(store.connect(path)) as conn:
        study = store.init_study(conn, "target", "imit", ratings_per_item)
        store.add_items(conn, [Item(k, "p", "m", "r") for k in plans])
        for slot, token in enumerate(store.create_raters(conn, max(map(len, plans.values())))):
            rater = store.rater_id_for(conn, token)
            for item_id, plan in plans.items():
                if slot < len(plan):
                    conn.execute("INSERT INTO assignments (rater_id, item_id, a_is_model, assigned_at, shown_at) "
                                 "VALUES (?, ?, ?, 0, 10)", (rater, item_id, slot % 2))
                    a_id = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                    a = assign.get_assignment(conn, rater, a_id)
                    assign.submit(conn, rater, a_id, choice_for(plan[slot], a.a_is_model), study, now=10 + slot + 1)
        yield conn


@pytest.fixture
def rated(tmp_path):
    with study_rated_as(tmp_path / "s.sqlite", PLAN, 3) as conn:
        yield conn


def test_summary_is_a_valid_results_record_with_expected_rates(rated, tmp_path):
    record = aggregate.summarize(rated)
    results_lib.write_results(tmp_path / "r.json", record)
    assert results_lib.read_results(tmp_path / "r.json")["benchmark"] == "crowd_rating"
    assert (record["model"], record["reference"], record["n"]) == ("imit", "target", 4)
    m = record["metrics"]
    # labels: win, loss, tie (split), tie -> equal or better on 3 of 4 items
    assert m["equal_or_better_mean"] == pytest.approx(0.75)
    assert m["equal_or_better_std"] == pytest.approx(0.5)
    assert (m["win"], m["tie"], m["loss"]) == (0.25, 0.5, 0.25)
    assert m["fleiss_kappa"] == pytest.approx(5 / 47)
    assert record["stderr"]["equal_or_better_mean"] == pytest.approx(0.25)
    s = record["settings"]
    assert (s["items_incomplete"], s["ratings"], s["raters"], s["split_items"]) == (1, 13, 3, 1)


def test_two_ratings_per_item(tmp_path):
    plans = {"lt": ["loss", "tie"], "wt": ["win", "tie"], "wl": ["win", "loss"], "ww": ["win", "win"],
             "ll": ["loss", "loss"]}
    with study_rated_as(tmp_path / "s.sqlite", plans, 2) as conn:
        record = aggregate.summarize(conn)
        items = {i["item"]: i["label"] for i in aggregate.item_stats(conn)}
    assert items == {"lt": "loss", "wt": "win", "wl": "tie", "ww": "win", "ll": "loss"}
    m, s = record["metrics"], record["settings"]
    assert record["n"] == 5 and m["equal_or_better_mean"] == pytest.approx(3 / 5)  # wt, wl, ww
    assert (m["win"], m["tie"], m["loss"]) == (pytest.approx(0.4), pytest.approx(0.2), pytest.approx(0.4))
    assert s["split_items"] == 3 and "three_way_split_items" not in s


def test_rater_and_item_stats_for_the_admin_page(rated):
    raters = aggregate.rater_stats(rated)
    # strict-majority items: i0 (win), i1 (loss), i3 (tie); the split i2 is not counted.
    assert [r["agreement"] for r in raters] == [pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1 / 3)]
    assert [r["rated"] for r in raters] == [5, 4, 4]
    assert [r["median_seconds"] for r in raters] == [1.0, 2.0, 3.0]
    items = {i["item"]: i for i in aggregate.item_stats(rated)}
    assert items["i2"]["votes"] == {"win": 1, "tie": 1, "loss": 1} and items["i2"]["label"] == "tie"
    assert items["i4"]["rated"] == 1 and items["i4"]["label"] is None


def test_export_has_one_row_per_rating_with_the_models_outcome(rated, tmp_path):
    n = export.write_ratings_csv(rated, tmp_path / "r.csv")
    lines = open(tmp_path / "r.csv").read().splitlines()
    assert n == 13 and len(lines) == 14
    assert lines[0] == ",".join(export.COLUMNS)
    outcomes = sorted(l.split(",")[4] for l in lines[1:])
    assert outcomes == sorted(sum(PLAN.values(), []))


def test_no_complete_item_gives_nulls_not_nan(tmp_path):
    with contextlib.closing(store.connect(tmp_path / "s.sqlite")) as conn:
        store.init_study(conn, "target", "imit", 3)
        record = aggregate.summarize(conn)
    assert record["n"] == 0 and all(v is None for v in record["metrics"].values())
    assert not any(isinstance(v, float) and math.isnan(v) for v in record["metrics"].values())
