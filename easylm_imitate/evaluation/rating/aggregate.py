"""From ratings to results: majority vote per item, equal-or-better rate, Fleiss' kappa.

Each rating is turned into the model's outcome against the reference (win, tie or loss),
whatever side the model was shown on. An item counts once it has all R ratings. Its label is
the outcome with a strict plurality of votes. When no outcome has more votes than every other
one (a *split*: with R=3 only win/tie/loss; with R=2 any two different votes), the balance of
wins and losses decides: more wins -> win, more losses -> loss, as many -> tie. So with R=3 a
split is a tie, and with R=2 (loss, tie) is a loss, (win, tie) a win and (win, loss) a tie.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sqlite3
import statistics

from easylm_imitate.evaluation import results as results_lib
from easylm_imitate.evaluation import stats
from easylm_imitate.evaluation.rating import store
from easylm_imitate.evaluation.rating.assign import outcome

OUTCOMES = ("win", "tie", "loss")
TIE_RULE = ("no strict plurality among win/tie/loss (a split): more wins than losses -> win, more losses -> "
            "loss, as many -> tie")


@dataclasses.dataclass(frozen=True)
class Rating:
    """One submitted rating, as stored, with the model's outcome and the seconds it took."""

    item_id: str
    rater_id: int
    choice: str
    a_is_model: bool
    outcome: str
    seconds: float
    submitted_at: float


def load_ratings(conn: sqlite3.Connection) -> list[Rating]:
    """Every submitted rating, in submission order."""
    rows = conn.execute("""SELECT item_id, rater_id, choice, a_is_model, shown_at, submitted_at
                           FROM assignments WHERE submitted_at IS NOT NULL ORDER BY submitted_at, id""")
    return [Rating(r["item_id"], r["rater_id"], r["choice"], bool(r["a_is_model"]),
                   outcome(r["choice"], bool(r["a_is_model"])), r["submitted_at"] - r["shown_at"],
                   r["submitted_at"]) for r in rows]


def majority(outcomes: list[str]) -> tuple[str, bool]:
    """(label, strict): the outcome with a strict plurality and True; for a split (no strict
    plurality) the sign of wins minus losses ("win", "loss", or "tie" when even) and False."""
    counts = collections.Counter(outcomes)
    ranked = counts.most_common()
    if not ranked:
        raise ValueError("majority of no votes")
    if len(ranked) == 1 or ranked[0][1] > ranked[1][1]:
        return ranked[0][0], True
    balance = counts["win"] - counts["loss"]
    return ("win" if balance > 0 else "loss" if balance < 0 else "tie"), False


def fleiss_kappa(table: list[list[int]]) -> float | None:
    """Fleiss' kappa for rows of per-category counts (every row the same number of raters, >= 2).

    None when it is undefined: no rows, or every rating in one category.
    """
    if not table:
        return None
    n = sum(table[0])
    if n < 2 or any(sum(row) != n for row in table):
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    n_items = len(table)
    p_bar = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in table) / n_items
    shares = [sum(row[j] for row in table) / (n_items * n) for j in range(len(table[0]))]
    p_e = sum(p * p for p in shares)
    if math.isclose(p_e, 1.0):
        return None
    return (p_bar - p_e) / (1 - p_e)


def by_item(ratings: list[Rating]) -> dict[str, list[Rating]]:
    """Ratings grouped by item id, in first-rating order."""
    groups: dict[str, list[Rating]] = {}
    for r in ratings:
        groups.setdefault(r.item_id, []).append(r)
    return groups


def item_labels(ratings: list[Rating], ratings_per_item: int) -> dict[str, tuple[str, bool]]:
    """{item id: (majority label, strict)} for every item with all its ratings."""
    return {item: majority([r.outcome for r in rs])
            for item, rs in by_item(ratings).items() if len(rs) >= ratings_per_item}


def summarize(conn: sqlite3.Connection) -> dict:
    """The study's results record (schema of easylm_imitate.evaluation.results, benchmark
    "crowd_rating"); only items with all R ratings count."""
    study = store.read_study(conn)
    ratings = load_ratings(conn)
    groups = by_item(ratings)
    labels = item_labels(ratings, study.ratings_per_item)
    n = len(labels)
    better = [1.0 if label in ("win", "tie") else 0.0 for label, _ in labels.values()]
    table = [[sum(r.outcome == o for r in groups[item]) for o in OUTCOMES] for item in labels]
    metrics = {
        "equal_or_better_mean": stats.mean(better) if n else None,
        "equal_or_better_std": statistics.stdev(better) if n >= 2 else None,
        **{o: (sum(label == o for label, _ in labels.values()) / n if n else None) for o in OUTCOMES},
        "fleiss_kappa": fleiss_kappa(table),
    }
    settings = {
        "ratings_per_item": study.ratings_per_item,
        "items_in_study": store.count_items(conn),
        "items_incomplete": store.count_items(conn) - n,
        "ratings": len(ratings),
        "raters": len({r.rater_id for r in ratings}),
        "split_items": sum(not strict for _, strict in labels.values()),
        "tie_rule": TIE_RULE,
        "std": "sample standard deviation (n-1) of the per-item 0/1 equal-or-better label",
    }
    stderr = {"equal_or_better_mean": stats.stderr_of_mean(better) if n >= 2 else None}
    return results_lib.make_results("crowd_rating", study.model, settings, metrics, n, stderr,
                                    reference=study.reference)


def rater_stats(conn: sqlite3.Connection) -> list[dict]:
    """Per rater: ratings given, open assignments, agreement with the items' majority (over
    complete items with a strict majority; the rater's own vote included) and median seconds."""
    study = store.read_study(conn)
    ratings = load_ratings(conn)
    labels = item_labels(ratings, study.ratings_per_item)
    out = []
    for row in conn.execute("""SELECT r.id, COUNT(a.id) - COUNT(a.submitted_at) AS open
                               FROM raters r LEFT JOIN assignments a ON a.rater_id = r.id
                               GROUP BY r.id ORDER BY r.id"""):
        mine = [r for r in ratings if r.rater_id == row["id"]]
        judged = [r for r in mine if r.item_id in labels and labels[r.item_id][1]]
        out.append({
            "rater": row["id"], "rated": len(mine), "open": row["open"],
            "agreement": (sum(r.outcome == labels[r.item_id][0] for r in judged) / len(judged)) if judged else None,
            "median_seconds": statistics.median(r.seconds for r in mine) if mine else None,
        })
    return out


def item_stats(conn: sqlite3.Connection) -> list[dict]:
    """Per item: ratings so far, open assignments, votes per outcome, label once complete and
    median seconds."""
    study = store.read_study(conn)
    groups = by_item(load_ratings(conn))
    out = []
    for row in conn.execute("""SELECT i.id, COUNT(a.id) - COUNT(a.submitted_at) AS open
                               FROM items i LEFT JOIN assignments a ON a.item_id = i.id
                               GROUP BY i.id ORDER BY i.seq"""):
        rs = groups.get(row["id"], [])
        complete = len(rs) >= study.ratings_per_item
        out.append({
            "item": row["id"], "rated": len(rs), "open": row["open"],
            "votes": {o: sum(r.outcome == o for r in rs) for o in OUTCOMES},
            "label": majority([r.outcome for r in rs])[0] if complete else None,
            "median_seconds": statistics.median(r.seconds for r in rs) if rs else None,
        })
    return out
