import json

import pytest

from easylm_imitate.evaluation import results as R


def test_roundtrip_and_optional_fields(tmp_path):
    rec = R.make_results("mmlu", "m", {"k": 5}, {"accuracy": 0.5}, 10, {"accuracy": 0.1},
                         base_model="llama-7b", imitation_tokens=2e7, base_params=7e9)
    R.write_results(tmp_path / "r.json", rec)
    back = R.read_results(tmp_path / "r.json")
    assert back == rec
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_nan_becomes_null(tmp_path):
    rec = R.make_results("x", "m", {}, {"a": float("nan")}, 1, {"a": float("nan")})
    R.write_results(tmp_path / "r.json", rec)
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["a"] is None


def test_crowd_rating_record_is_accepted(tmp_path):
    rec = {"benchmark": "crowd_rating", "model": "imitation-13b", "reference": "chatgpt", "settings": {"raters": 3},
           "metrics": {"equal_or_better_mean": 0.7, "equal_or_better_std": 0.05, "win": 10, "tie": 4, "loss": 6,
                       "fleiss_kappa": 0.3}, "n": 20, "stderr": 0.02, "timestamp": "2026-01-02T03:04:05+00:00"}
    (tmp_path / "c.json").write_text(json.dumps(rec))
    assert R.read_results(tmp_path / "c.json")["metrics"]["win"] == 10


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.pop("model"), "model"),
    (lambda r: r.update(metrics={"acc": "high"}), "metrics.acc"),
    (lambda r: r.update(n=-1), "'n'"),
    (lambda r: r.update(timestamp="yesterday"), "timestamp"),
    (lambda r: r.update(stderr="x"), "stderr"),
    (lambda r: r.update(imitation_tokens="lots"), "imitation_tokens"),
])
def test_invalid_records_name_file_and_field(tmp_path, mutate, field):
    rec = R.make_results("mmlu", "m", {}, {"accuracy": 0.5}, 3)
    mutate(rec)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(R.ResultsError) as e:
        R.read_results(path)
    assert str(path) in str(e.value) and field in str(e.value)


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"benchmark":\n oops}')
    with pytest.raises(R.ResultsError, match=r"bad.json:2"):
        R.read_results(path)
