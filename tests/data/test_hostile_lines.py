"""One hostile line never costs the rest: a 100k-deep nested JSON line, a lone surrogate and a
gzip file cut mid-stream are each rejected with file, line and reason by the data build and the
trainer's loader, and every valid record is kept."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

from data_helpers import read_jsonl, write_jsonl

from easylm_imitate.assets import asset_path
from easylm_imitate.data import train_loader
from easylm_imitate.data.readers import iter_file
from easylm_imitate.data.templates import get_template
from easylm_imitate.testing.hostile_lines import lone_surrogate_line, nested_json_line, write_truncated_gz

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORDS = "river mountain bread music garden window letter summer winter story".split()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))) + "."


def _sharegpt(i: int, rng: random.Random) -> dict:
    return {"id": f"r{i}", "conversations": [{"from": "human", "value": f"question {i}: {_sentence(rng)}"},
                                             {"from": "gpt", "value": f"answer {i}: {_sentence(rng)}"}]}


def _canonical(i: int, rng: random.Random) -> dict:
    return {"id": f"c{i}", "source": "t", "turns": [{"role": "user", "text": f"question {i}: {_sentence(rng)}"},
                                                    {"role": "assistant", "text": f"answer {i}: {_sentence(rng)}"}]}


def _hostile_jsonl(path, make, n=12):
    """n valid rows with a nested line at line 4 and a lone-surrogate line at line 8; (path, valid ids)."""
    rng = random.Random(0)
    rows = [make(i, rng) for i in range(n)]
    bad = dict(rows[0], id="surrogate")
    key = "conversations" if "conversations" in bad else "turns"
    bad[key] = [dict(bad[key][0]), bad[key][1]]
    bad[key][0]["value" if key == "conversations" else "text"] = "x\ud800y"
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, nested_json_line(field=key, id="deep"))
    lines.insert(7, lone_surrogate_line(bad))
    write_jsonl(path, lines)
    return str(path), [r["id"] for r in rows]


def _cut_gz(path, make, n=400):
    """A gzip JSONL file cut mid-stream; (path, ids of the rows whole before the cut, line of the cut)."""
    rng = random.Random(1)
    rows = [make(1000 + i, rng) for i in range(n)]
    whole = write_truncated_gz(path, [json.dumps(r) for r in rows], keep=0.5)
    assert 10 < whole < n
    return str(path), [r["id"] for r in rows[:whole]], whole + 1


def test_readers_reject_each_hostile_line_and_keep_reading(tmp_path):
    plain, ids = _hostile_jsonl(tmp_path / "a.jsonl", _sharegpt)
    items = list(iter_file(plain))
    assert [i.obj["id"] for i in items if i.error is None] == ids
    assert [(i.line, i.code) for i in items if i.error] == [(4, "too_deep"), (8, "lone_surrogate")]
    gz, whole_ids, cut_line = _cut_gz(tmp_path / "b.jsonl.gz", _sharegpt)
    items = list(iter_file(gz))
    assert [i.obj["id"] for i in items if i.error is None] == whole_ids
    assert [(i.line, i.code) for i in items if i.error] == [(cut_line, "truncated")]


def test_json_array_reader_rejects_deep_and_surrogate_elements_and_a_cut_gzip(tmp_path):
    rng = random.Random(2)
    rows = [_sharegpt(i, rng) for i in range(6)]
    parts = [json.dumps(r, indent=2) for r in rows]
    parts.insert(2, nested_json_line(id="deep"))
    parts.insert(5, lone_surrogate_line(dict(rows[0], id="surrogate", conversations=[
        {"from": "human", "value": "x\ud800y"}, {"from": "gpt", "value": "ok"}])))
    path = tmp_path / "arr.json"
    path.write_text("[\n" + ",\n".join(parts) + "\n]\n")
    items = list(iter_file(str(path)))
    assert [i.obj["id"] for i in items if i.error is None] == [r["id"] for r in rows]
    assert [i.code for i in items if i.error] == ["too_deep", "lone_surrogate"]

    big = [_sharegpt(i, rng) for i in range(300)]
    text = json.dumps(big, indent=2)
    whole = write_truncated_gz(tmp_path / "arr.json.gz", text.split("\n"), keep=0.5)
    items = list(iter_file(str(tmp_path / "arr.json.gz")))
    kept = [i.obj["id"] for i in items if i.error is None]
    assert kept == [r["id"] for r in big[:len(kept)]] and whole // 14 <= len(kept) < len(big)
    errors = [i for i in items if i.error]
    assert [i.code for i in errors] == ["truncated"] and "compressed" in errors[0].error


def _run_build(*args):
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "easylm_imitate.data.build", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_data_build_rejects_hostile_lines_and_a_cut_gzip_and_keeps_every_valid_record(tmp_path):
    plain, ids = _hostile_jsonl(tmp_path / "a.jsonl", _sharegpt)
    gz, whole_ids, cut_line = _cut_gz(tmp_path / "b.jsonl.gz", _sharegpt)
    out = tmp_path / "out"
    proc = _run_build(f"--input=sharegpt:{plain}", f"--input=sharegpt:{gz}", f"--out={out}",
                      "--token_counter=approx", "--eval_prompts=0", "--languages=")
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = {r["id"].split("#")[0] for r in read_jsonl(out / "train.jsonl")}
    assert kept == {f"sharegpt:{i}" for i in ids} | {f"sharegpt_2:{i}" for i in whole_ids}
    rejects = {(r["file"], r["line"]): r for r in read_jsonl(out / "rejects.jsonl")}
    assert {k: r["code"] for k, r in rejects.items()} == {
        (plain, 4): "too_deep", (plain, 8): "lone_surrogate", (gz, cut_line): "truncated"}
    assert "nested" in rejects[plain, 4]["reason"] and "surrogate" in rejects[plain, 8]["reason"]
    assert "truncated" in rejects[gz, cut_line]["reason"]


def test_trainer_loader_rejects_hostile_lines_and_a_cut_gzip_and_keeps_every_valid_record(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(asset_path("tiny_tokenizer"))
    template = get_template("paper")
    plain, ids = _hostile_jsonl(tmp_path / "train.jsonl", _canonical)
    loaded = train_loader.render_file(plain, tokenizer, template, 256, 0, 0)
    assert loaded.stats.examples == len(ids)
    assert [(r["file"], r["line"]) for r in loaded.rejects] == [(plain, 4), (plain, 8)]
    assert "nested" in loaded.rejects[0]["reason"] and "surrogate" in loaded.rejects[1]["reason"]

    gz, whole_ids, cut_line = _cut_gz(tmp_path / "train.jsonl.gz", _canonical)
    loaded = train_loader.render_file(gz, tokenizer, template, 256, 0, 0)
    assert loaded.stats.examples == len(whole_ids)
    assert [(r["file"], r["line"]) for r in loaded.rejects] == [(gz, cut_line)]
    assert "truncated" in loaded.rejects[0]["reason"]
