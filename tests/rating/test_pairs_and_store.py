"""Pairs file reading (bad records set aside with file/line/field) and study loading."""

import contextlib
import json

import pytest

from easylm_imitate.evaluation import rating
from easylm_imitate.evaluation.rating import store
from rating.rating_helpers import write_pairs


def rec(i, model_text="m", ref_text="r", **extra):
    return {"id": i, "prompt": f"prompt {i}", "outputs": {"imit": model_text, "target": ref_text}, **extra}


def test_bad_records_are_set_aside_with_line_and_field(tmp_path):
    path = write_pairs(tmp_path / "p.jsonl", [
        rec("a"),
        "{not json",
        {"id": "b", "prompt": "p", "outputs": {"imit": "m"}},
        {"id": "c", "prompt": "", "outputs": {"imit": "m", "target": "r"}},
        {"id": "d", "prompt": "p", "outputs": {"imit": ["m"], "target": "r"}},
        rec("a"),
        {"id": "e", "prompt": "p", "outputs": {"other": "m", "target": "r"}},
        rec(7),
    ])
    pairs = rating.load_pairs(path, reference="target")
    assert [i.id for i in pairs.items] == ["a", "7"]
    assert pairs.model == "imit"
    by_line = {r["line"]: r["reason"] for r in pairs.rejects}
    assert set(by_line) == {2, 3, 4, 5, 6, 7}
    assert all(r["file"] == path for r in pairs.rejects)
    assert "invalid JSON" in by_line[2]
    assert "no reference system 'target'" in by_line[3]
    assert "'prompt'" in by_line[4]
    assert "'outputs.imit'" in by_line[5]
    assert "duplicate id 'a'" in by_line[6]
    assert "no model system 'imit'" in by_line[7]  # model fixed by the first good record


def test_more_than_two_systems_needs_a_model_name(tmp_path):
    path = write_pairs(tmp_path / "p.jsonl", [{"id": 1, "prompt": "p", "outputs": {"x": "1", "y": "2", "t": "3"}}])
    assert "pass the model name" in rating.load_pairs(path, "t").rejects[0]["reason"]
    pairs = rating.load_pairs(path, "t", model="y")
    assert pairs.items[0].model_output == "2" and pairs.items[0].reference_output == "3"


def test_missing_pairs_file_is_a_clear_error(tmp_path):
    with pytest.raises(rating.PairsError, match="not found"):
        rating.load_pairs(tmp_path / "nope.jsonl", "t")


def test_load_study_writes_rejects_and_extends_by_new_ids(tmp_path):
    db = str(tmp_path / "s.sqlite")
    p1 = write_pairs(tmp_path / "p1.jsonl", [rec("a"), "oops", rec("b")])
    study = rating.load_study(db, p1, reference="target")
    assert study == store.Study("target", "imit", 3)
    rejects = [json.loads(l) for l in open(db + ".rejects.jsonl")]
    assert [(r["file"], r["line"]) for r in rejects] == [(p1, 2)] and "invalid JSON" in rejects[0]["reason"]
    # A second load adds new ids, keeps identical ones, and sets aside changed ones.
    p2 = write_pairs(tmp_path / "p2.jsonl", [rec("a"), rec("b", model_text="changed"), rec("c")])
    rating.load_study(db, p2)  # reference and model come from the stored study
    with contextlib.closing(store.connect(db)) as conn:
        assert store.count_items(conn) == 3
        assert store.get_item(conn, "b").model_output == "m"
    assert "already in the study with different text" in open(db + ".rejects.jsonl").read()


def test_flags_that_contradict_the_stored_study_fail(tmp_path):
    db = str(tmp_path / "s.sqlite")
    path = write_pairs(tmp_path / "p.jsonl", [rec("a")])
    rating.load_study(db, path, reference="target", ratings_per_item=3)
    with pytest.raises(rating.StudyError, match="ratings_per_item='3'; got '5'"):
        rating.load_study(db, None, ratings_per_item=5)
    with pytest.raises(rating.StudyError, match="no study yet"):
        rating.load_study(str(tmp_path / "empty.sqlite"))
    with pytest.raises(rating.StudyError, match="no usable record"):
        rating.load_study(str(tmp_path / "x.sqlite"), write_pairs(tmp_path / "bad.jsonl", ["nope"]), reference="t")


def test_admin_token_is_generated_once_and_stored(tmp_path, monkeypatch):
    monkeypatch.delenv(store.ADMIN_TOKEN_ENV, raising=False)
    with contextlib.closing(store.connect(tmp_path / "s.sqlite")) as conn:
        token, generated = store.admin_token(conn)
        assert generated and len(token) >= 24
        assert store.admin_token(conn) == (token, False)
        assert store.admin_token(conn, "given") == ("given", False)
        monkeypatch.setenv(store.ADMIN_TOKEN_ENV, "from-env")
        assert store.admin_token(conn) == ("from-env", False)
