"""Assignment: exactly R ratings per item from distinct raters, idempotent submits, leases."""

import contextlib

import pytest

from easylm_imitate.evaluation.rating import assign, store
from easylm_imitate.evaluation.rating.pairs import Item


@pytest.fixture
def conn(tmp_path):
    with contextlib.closing(store.connect(tmp_path / "s.sqlite")) as c:
        store.init_study(c, "target", "imit", 3)
        store.add_items(c, [Item(f"i{k}", f"p{k}", f"model {k}", f"ref {k}") for k in range(5)])
        yield c


def rate_all(conn, rater_id, study, choice="A"):
    seen = []
    while (a := assign.next_assignment(conn, rater_id, study)) is not None:
        seen.append(a.item.id)
        assert assign.submit(conn, rater_id, a.id, choice, study) == "recorded"
    return seen


def test_each_item_gets_exactly_r_ratings_from_distinct_raters(conn):
    study = store.read_study(conn)
    raters = [store.rater_id_for(conn, t) for t in store.create_raters(conn, 4)]
    seen = {r: rate_all(conn, r, study) for r in raters}
    for r in raters[:3]:
        assert sorted(seen[r]) == [f"i{k}" for k in range(5)]  # each item once per rater
    assert seen[raters[3]] == []  # all items full: nothing for a 4th rater
    rows = conn.execute("SELECT item_id, COUNT(*), COUNT(DISTINCT rater_id) FROM assignments "
                        "WHERE submitted_at IS NOT NULL GROUP BY item_id").fetchall()
    assert [tuple(r)[1:] for r in rows] == [(3, 3)] * 5
    assert assign.progress(conn, raters[0], study) == (5, 0)


def test_open_assignment_is_stable_and_double_submit_changes_nothing(conn):
    study = store.read_study(conn)
    r = store.rater_id_for(conn, store.create_raters(conn, 1)[0])
    first = assign.next_assignment(conn, r, study)
    assert assign.next_assignment(conn, r, study) == first  # reload shows the same item, same order
    assert assign.submit(conn, r, first.id, "B", study) == "recorded"
    assert assign.submit(conn, r, first.id, "A", study) == "already"
    assert assign.get_assignment(conn, r, first.id).choice == "B"
    assert assign.progress(conn, r, study) == (1, 4)
    with pytest.raises(ValueError, match="choice"):
        assign.submit(conn, r, first.id, "C", study)


def test_a_rater_cannot_touch_another_raters_assignment(conn):
    study = store.read_study(conn)
    r1, r2 = (store.rater_id_for(conn, t) for t in store.create_raters(conn, 2))
    a1 = assign.next_assignment(conn, r1, study)
    assert assign.get_assignment(conn, r2, a1.id) is None
    with pytest.raises(KeyError):
        assign.submit(conn, r2, a1.id, "A", study)


def test_expired_lease_frees_the_slot_and_a_late_submit_never_exceeds_r(conn):
    study = store.read_study(conn)
    slow, *fast = (store.rater_id_for(conn, t) for t in store.create_raters(conn, 4))
    held = assign.next_assignment(conn, slow, study, now=1000.0, lease_s=60)
    # Within the lease three others fill the other slots; after it, the held slot goes too.
    got = [assign.next_assignment(conn, f, study, now=1010.0, lease_s=60).item.id for f in fast[:2]]
    assert got == [held.item.id] * 2
    third = assign.next_assignment(conn, fast[2], study, now=1030.0, lease_s=60)
    assert third.item.id != held.item.id  # the held slot is still reserved
    assign.submit(conn, fast[2], third.id, "A", study)
    later = assign.next_assignment(conn, fast[2], study, now=2000.0, lease_s=60)
    assert later.item.id == held.item.id  # lease over: slot handed out again
    for f, a in zip(fast, [assign.next_assignment(conn, f, study, now=2000.0, lease_s=60) for f in fast[:2]] + [later]):
        assert assign.submit(conn, f, a.id, "equal", study) == "recorded"
    assert assign.submit(conn, slow, held.id, "A", study) == "full"
    count = conn.execute("SELECT COUNT(*) FROM assignments WHERE item_id = ? AND submitted_at IS NOT NULL",
                         (held.item.id,)).fetchone()[0]
    assert count == 3
    assert assign.next_assignment(conn, slow, study, now=2001.0).item.id != held.item.id


def test_sides_are_drawn_at_random_per_rater_and_item(conn):
    study = store.read_study(conn)
    sides = []
    for token in store.create_raters(conn, 3):
        r = store.rater_id_for(conn, token)
        while (a := assign.next_assignment(conn, r, study)) is not None:
            sides.append(a.a_is_model)
            assert (a.output_a, a.output_b) == ((a.item.model_output, a.item.reference_output) if a.a_is_model
                                                else (a.item.reference_output, a.item.model_output))
            assign.submit(conn, r, a.id, "equal", study)
    assert len(sides) == 15 and 0 < sum(sides) < 15  # all-same has probability 2**-14


@pytest.mark.parametrize("choice,a_is_model,expected", [
    ("A", True, "win"), ("B", True, "loss"), ("A", False, "loss"), ("B", False, "win"),
    ("equal", True, "tie"), ("equal", False, "tie")])
def test_outcome_maps_sides_to_the_model(choice, a_is_model, expected):
    assert assign.outcome(choice, a_is_model) == expected


def test_concurrent_raters_on_separate_connections_never_exceed_r(tmp_path):
    import threading

    path = tmp_path / "c.sqlite"
    with contextlib.closing(store.connect(path)) as c:
        study = store.init_study(c, "target", "imit", 3)
        store.add_items(c, [Item(f"i{k}", "p", "m", "r") for k in range(6)])
        raters = [store.rater_id_for(c, t) for t in store.create_raters(c, 8)]

    def work(rater):
        with contextlib.closing(store.connect(path)) as conn:
            rate_all(conn, rater, study, choice="equal")

    threads = [threading.Thread(target=work, args=(r,)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with contextlib.closing(store.connect(path)) as c:
        rows = c.execute("SELECT COUNT(*), COUNT(DISTINCT rater_id) FROM assignments "
                         "WHERE submitted_at IS NOT NULL GROUP BY item_id").fetchall()
    assert [tuple(r) for r in rows] == [(3, 3)] * 6
