"""Training-side data: packing, per-host slices, resumable iteration, rejects."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from easylm_imitate.assets import asset_path
from easylm_imitate.data import train_loader
from easylm_imitate.data.packing import PackStats, next_token_pieces, pack_pieces
from easylm_imitate.data.templates import get_template


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))


def test_packed_rows_keep_segments_apart_and_restart_positions():
    stats = PackStats()
    a = next_token_pieces([1, 5, 6, 7], [0, 0, 1, 1], 8, stats)
    b = next_token_pieces([1, 9, 9], [0, 1, 1], 8, stats)
    rows = pack_pieces(a + b, 8, 0, stats)
    assert rows["inputs"].shape == (1, 8)
    np.testing.assert_array_equal(rows["segment_ids"][0], [1, 1, 1, 2, 2, 0, 0, 0])
    np.testing.assert_array_equal(rows["positions"][0], [0, 1, 2, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(rows["inputs"][0, :5], [1, 5, 6, 1, 9])
    np.testing.assert_array_equal(rows["targets"][0, :5], [5, 6, 7, 9, 9])
    np.testing.assert_array_equal(rows["weights"][0], [0, 1, 1, 1, 1, 0, 0, 0])


def test_long_examples_are_split_and_pieces_without_loss_dropped():
    stats = PackStats()
    ids = list(range(1, 22))
    mask = [0] * 12 + [1] * 9
    pieces = next_token_pieces(ids, mask, 8, stats)
    assert stats.split_examples == 1 and stats.dropped_pieces_without_loss == 1
    assert [len(p[0]) for p in pieces] == [8, 4]
    assert sum(int(p[2].sum()) for p in pieces) == 9


def test_host_slices_together_are_the_global_batch_and_state_resumes():
    rows = {k: np.arange(40 * 4, dtype=np.int32).reshape(40, 4) for k in ("inputs", "targets")}
    single = train_loader.batch_iterator(rows, 8, 10, seed=3)
    hosts = [train_loader.batch_iterator(rows, 8, 10, seed=3, process_index=i, process_count=2) for i in range(2)]
    for _ in range(7):
        whole = next(single)["inputs"]
        parts = np.concatenate([next(h)["inputs"] for h in hosts])
        assert sorted(map(tuple, whole)) == sorted(map(tuple, parts))
    state = single.get_state()
    expected = [next(single)["inputs"] for _ in range(3)]
    resumed = train_loader.batch_iterator(rows, 8, 10, seed=3)
    resumed.set_state(state)
    for e in expected:
        np.testing.assert_array_equal(next(resumed)["inputs"], e)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_bad_records_are_rejected_with_line_and_reason(tmp_path, tokenizer):
    good = {"id": "g", "source": "t", "turns": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello"}]}
    no_reply = {"id": "n", "source": "t", "turns": [{"role": "user", "text": "hi"}]}
    bad_role = {"id": "r", "source": "t", "turns": [{"role": "wizard", "text": "hi"}]}
    path = _write(tmp_path / "d.jsonl", [json.dumps(good), json.dumps(no_reply), json.dumps(bad_role), "{not json"])
    loaded = train_loader.render_file(path, tokenizer, get_template("paper"), 64, 0, 0)
    assert loaded.stats.examples == 1
    by_line = {r["line"]: r["reason"] for r in loaded.rejects}
    assert set(by_line) == {2, 3, 4}
    assert "wizard" in by_line[3] and "JSON" in by_line[4]
    assert all(r["file"] == path for r in loaded.rejects)


def test_empty_or_missing_file_is_an_error(tmp_path, tokenizer):
    with pytest.raises(train_loader.DataError, match="no usable training examples"):
        train_loader.render_file(_write(tmp_path / "e.jsonl", []), tokenizer, get_template("paper"), 64, 0, 0)
    with pytest.raises(train_loader.DataError, match="not found"):
        train_loader.render_file(str(tmp_path / "missing.jsonl"), tokenizer, get_template("paper"), 64, 0, 0)
