"""Benchmark decontamination: exactly the conversations sharing a 13-word n-gram with a benchmark
item are dropped, each reject names the benchmark, the item and the n-gram, the report counts
per benchmark, and bad --decontaminate values are one-line errors naming the flag and file."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
from data_helpers import english, read_jsonl, sharegpt_rows

from easylm_imitate.data import building
from easylm_imitate.data.decontaminate import NgramIndex, load_index, words
from easylm_imitate.data.pipeline import Options, SourceSpec
from easylm_imitate.data.readers import ReadOptions
from easylm_imitate.data.tokens import TokenCounter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MMLU_Q = ("Which of the following best explains why the planet Venus has a much hotter surface than "
          "Mercury even though it is further from the Sun")
NQ_LONG = "who was the first person to walk on the surface of the moon during the apollo eleven mission in 1969"
NQ_SHORT = "who wrote the song let it be"
FILE_ITEM = ("The quick brown fox jumps over the lazy dog while the farmer counts seventeen sheep in the "
             "green meadow beside the river")
HUMANEVAL_0_SOLUTION = """    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2:
                distance = abs(elem - elem2)
                if distance < threshold:
                    return True
"""


def _benchmarks(tmp_path):
    mmlu = tmp_path / "mmlu"
    (mmlu / "test").mkdir(parents=True)
    (mmlu / "test" / "astronomy_test.csv").write_text(
        "What is the closest star to Earth?,Sirius,The Sun,Vega,Polaris,B\n"
        f"\"{MMLU_Q}?\",Its clouds,Its greenhouse effect,Its rotation,Its moons,B\n")
    nq = tmp_path / "nq.jsonl"
    nq.write_text(json.dumps({"question": NQ_LONG, "answer": ["Neil Armstrong"]}) + "\n"
                  + json.dumps({"question": NQ_SHORT, "answer": ["Paul McCartney"]}) + "\n")
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": "fox-1", "text": FILE_ITEM}) + "\n"
                     + json.dumps({"id": "other", "text": "a short item"}) + "\n")
    return f"humaneval,mmlu:{mmlu},nq:{nq},{items}"


def _conv(cid, user, reply, system=None):
    turns = ([{"from": "system", "value": system}] if system else []) + [
        {"from": "human", "value": user}, {"from": "gpt", "value": reply}]
    return {"id": cid, "conversations": turns}


def _corpus(tmp_path):
    rng = random.Random(3)
    rows = sharegpt_rows(rng, 30)
    # id -> the benchmark that rejects it ("both" overlaps mmlu and the items file: the first named wins)
    planted = {"he": "humaneval", "mmlu": "mmlu", "nq": "nq", "file": "items", "both": "mmlu"}
    rows += [
        _conv("he", "Can you finish this function for me please, I am stuck with it?",
              "Sure, here it is:\n```python\n" + HUMANEVAL_0_SOLUTION + "```\nThis compares every pair."),
        _conv("mmlu", f"QUIZ TIME!!! {MMLU_Q.upper()}? Please answer with a short reason.", english(rng)),
        _conv("nq", "Trivia question for you", f"Here is one: {NQ_LONG.title()}? It was Neil Armstrong."),
        _conv("file", english(rng), f"As the saying goes, {FILE_ITEM.lower()}, and then everyone went home."),
        _conv("both", f"{MMLU_Q} and also {FILE_ITEM}", english(rng)),
    ]
    near = " ".join(FILE_ITEM.split()[:12])  # 12 words: one short of an n-gram
    kept = {
        "near": _conv("near", f"Tell me about this: {near} and nothing else please.", english(rng)),
        "short": _conv("short", f"Quick one: {NQ_SHORT} and when was it released?", english(rng)),
        "sys": _conv("sys", "What do you make of the sentence in your instructions today?", english(rng),
                     system=f"Remember: {FILE_ITEM}"),
    }
    rows += list(kept.values())
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(rows))
    return str(path), planted, kept


def _build(tmp_path, index, **options):
    path, planted, kept = _corpus(tmp_path)
    spec = SourceSpec("sharegpt", path, ReadOptions(kind="sharegpt"))
    settings = dict(seed=0, languages=(), eval_num_prompts=3, eval_drop_code=False, dedup="off", **options)
    out = tmp_path / "out"
    report = building.build([spec], Options(**settings), TokenCounter("paper", None, approx=True), str(out),
                            log=lambda _: None, decontaminate=index)
    return out, report, planted, kept


def test_exactly_the_overlapping_conversations_are_dropped_with_their_reasons(tmp_path):
    index = load_index(_benchmarks(tmp_path), log=lambda _: None)
    items_name = index.names[-1]  # a file benchmark is named by its path
    assert items_name == str(tmp_path / "items.jsonl")
    out, report, planted, kept = _build(tmp_path, index)
    rejects = [r for r in read_jsonl(out / "rejects.jsonl") if r["code"] == "benchmark_overlap"]
    by_id = {r["id"].split(":", 1)[1]: r for r in rejects}
    assert set(by_id) == set(planted)
    for rid, benchmark in planted.items():
        r = by_id[rid]
        assert r["benchmark"] == (items_name if benchmark == "items" else benchmark), r
        assert r["step"] == "decontaminated" and r["item"] in r["reason"] and r["ngram"] in r["reason"]
        gram = r["ngram"].split()
        assert len(gram) == 13
        turns = " ".join(words(" ".join(t["value"] for t in next(
            row for row in json.load(open(tmp_path / "sharegpt.json")) if row["id"] == rid)["conversations"])))
        assert r["ngram"] in turns  # the n-gram is really in the conversation
    assert by_id["he"]["item"] == "HumanEval/0"
    assert by_id["mmlu"]["item"] == "astronomy/test/1" and by_id["both"]["item"] == "astronomy/test/1"
    assert by_id["nq"]["item"] == "validation/0"
    assert by_id["file"]["item"] == "fox-1"

    written = read_jsonl(out / "train.jsonl") + read_jsonl(out / "eval_prompts.jsonl")
    kept_ids = {r["id"].split(":", 1)[1] for r in written}
    assert set(kept) <= kept_ids  # 12 shared words, a short item, a system prompt: kept
    assert not set(planted) & kept_ids

    dec = report["decontamination"]
    assert dec["ngram"] == 13 and dec["records_dropped"] == len(planted)
    b = dec["benchmarks"]
    assert b["humaneval"]["items"] == 164 and b["humaneval"]["records_dropped"] == 1
    assert b["mmlu"]["items"] == 2 and b["mmlu"]["records_dropped"] == 2 and b["mmlu"]["records_overlapping"] == 2
    assert b["nq"]["records_dropped"] == 1 and b["nq"]["items_shorter_than_ngram"] == 1
    assert b[items_name]["records_dropped"] == 1 and b[items_name]["records_overlapping"] == 2
    assert report["drops"]["benchmark_overlap"] == {"sharegpt": len(planted)}
    assert report["accounting"]["balanced"]
    assert list(report["steps"]).index("decontaminated") == list(report["steps"]).index("blocked") + 1
    assert "decontamination (13-word n-grams): 5 records dropped" in building.summary(report)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["decontamination"] == dec


def test_ngram_length_is_a_setting(tmp_path):
    index = load_index(_benchmarks(tmp_path), n=12, log=lambda _: None)
    out, report, planted, kept = _build(tmp_path, index)
    dropped = {r["id"].split(":", 1)[1] for r in read_jsonl(out / "rejects.jsonl") if r["code"] == "benchmark_overlap"}
    assert dropped == set(planted) | {"near"}  # 12 shared words now count


def test_a_hash_collision_never_drops_a_conversation(monkeypatch):
    from easylm_imitate.data import decontaminate

    monkeypatch.setattr(decontaminate, "window_hashes", lambda ids, n: __import__("numpy").zeros(
        max(len(ids) - n + 1, 0), "uint64"))  # every window collides
    index = NgramIndex({"b": [decontaminate.Item("x", (FILE_ITEM,))]}, 13)
    found = index.find([["completely different words " * 10], [FILE_ITEM]])
    assert found[0] == {} and found[1]["b"].item == "x"


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "easylm_imitate.data.build", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


def test_binary_reports_per_benchmark_counts(tmp_path):
    path, planted, _ = _corpus(tmp_path)
    spec = _benchmarks(tmp_path)
    proc = _run(f"--input=sharegpt:{path}", f"--out={tmp_path / 'out'}", "--token_counter=approx",
                "--languages=", "--eval_prompts=2", f"--decontaminate={spec}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "decontaminate: humaneval: 164 items" in proc.stdout
    assert "decontamination (13-word n-grams): 5 records dropped" in proc.stdout
    assert "humaneval: 164 items, dropped 1 (overlapping 1)" in proc.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["decontamination"]["records_dropped"] == 5


@pytest.mark.parametrize("value, message", [
    ("gsm8k", "--decontaminate: 'gsm8k' is neither a known benchmark"),
    ("humaneval,/no/such/items.jsonl", "--decontaminate: '/no/such/items.jsonl' is neither"),
    ("mmlu:/no/such/dir", "--decontaminate: mmlu (from /no/such/dir)"),
    ("BAD", "--decontaminate: {bad}:2: invalid JSON"),
])
def test_bad_benchmarks_are_one_line_errors(tmp_path, value, message):
    path, _, _ = _corpus(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json\n')
    value = value.replace("BAD", str(bad))
    proc = _run(f"--input=sharegpt:{path}", f"--out={tmp_path / 'out'}", "--token_counter=approx",
                f"--decontaminate={value}", timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: " + message.format(bad=bad)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
