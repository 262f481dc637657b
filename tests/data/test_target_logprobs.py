"""The target's log-probabilities in canonical records (meta.target_logprobs): mapped onto
the student's tokens for distillation, kept in step with the turns by the build, and a
clear error when the target used another tokenizer."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from easylm_imitate.data import pipeline as P
from easylm_imitate.data import target_logprobs as tlp
from easylm_imitate.data import train_loader
from easylm_imitate.data.templates import get_template
from easylm_imitate.model_names import load_tokenizer

TINY = "easylm_imitate/assets/tiny_tokenizer"


@pytest.fixture(scope="module")
def smollm2():
    return load_tokenizer("smollm2-135m-instruct")


def content_of(tokenizer, text: str, end: bool = True, split_first: bool = False) -> list[dict]:
    """An OpenAI chat logprobs `content` list for `text` as SmolLM2's server would give it:
    the tokens of the text (and the end token), each with two alternatives."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if end:
        ids.append(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    pieces = [tokenizer.decode([i]) for i in ids]
    if split_first:  # the same text, split into two tokens the vocabulary has
        pieces = [pieces[0][:2], pieces[0][2:], *pieces[1:]]
    out = []
    for n, piece in enumerate(pieces):
        def entry(t, lp):
            return {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}
        alts = [entry(piece, -0.2 - 0.01 * n), entry(" the", -2.0), entry(".", -3.0)]
        out.append({**entry(piece, alts[0]["logprob"]), "top_logprobs": alts})
    return out


def record(rid, tokenizer, replies, **kw):
    turns = []
    for q, a in replies:
        turns += [{"role": "user", "text": q}, {"role": "assistant", "text": a}]
    return {"id": rid, "source": "t", "turns": turns,
            "meta": {tlp.KEY: [content_of(tokenizer, a, **kw) for _, a in replies]}}


def test_target_top_k_lands_on_the_tokens_it_predicts(smollm2):
    rec = record("r1", smollm2, [("Hi?", "Hello there, friend."), ("And?", "Paris is 42 km away.")])
    rec["meta"][tlp.KEY][1] = rec["meta"][tlp.KEY][1][:-1]  # OpenAI leaves the end token out
    ids, mask = get_template("chatml").render(rec, smollm2)
    top_ids, top_lp, slots = tlp.align(rec, ids, mask, smollm2, top_k=4)
    runs = tlp.loss_runs(mask)
    assert len(runs) == 2
    on = slots.any(-1)
    (a0, b0), (a1, b1) = runs
    assert on[a0:b0].all() and on[a1:b1 - 1].all() and not on[b1 - 1]  # no target for the unreported end
    assert on.sum() == (b0 - a0) + (b1 - a1) - 1 and not on[:a0].any()
    # slot 0 is the chosen token itself; " the" and "." follow; K=4 > 3 given leaves one slot unset
    np.testing.assert_array_equal(top_ids[a0:b0, 0], ids[a0:b0])
    assert (top_ids[a0:b0, 1] == smollm2.convert_tokens_to_ids("Ġthe")).all()
    distinct = [len({t["token"], " the", "."}) for t in rec["meta"][tlp.KEY][0]]  # a repeated id counts once
    assert slots[a0:b0].sum(-1).tolist() == distinct and 2 in distinct
    np.testing.assert_allclose(top_lp[a0, :3], [-0.2, -2.0, -3.0])

    # rows carry it shifted like the targets: slot i predicts targets[i]
    loaded = _load(smollm2, [rec], alpha=0.5, top_k=2)
    rows = loaded.rows
    w = rows["distill_weights"][0]
    assert set(np.unique(w)) == {0.0, 0.5} and (w > 0).sum() == on.sum()
    assert ((w > 0) <= (rows["weights"][0] > 0)).all()  # only on the loss mask
    where = np.flatnonzero(w > 0)
    np.testing.assert_array_equal(rows["distill_ids"][0, where, 0], rows["targets"][0, where])
    assert rows["distill_ids"].shape[-1] == 2


def _load(tokenizer, records, tmp=None, alpha=0.5, top_k=3, template="chatml"):
    import tempfile

    path = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, dir=tmp)
    with path as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    section = ml_collections.ConfigDict({"alpha": alpha, "top_k": top_k})
    return train_loader.render_file(path.name, tokenizer, get_template(template), 128, 0, 0, section)


def test_another_tokenizer_is_a_clear_error_naming_record_and_token(smollm2, tmp_path):
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(TINY)
    recs = [record("conv-7", smollm2, [("Where?", "Paris, of course.")])]
    with pytest.raises(train_loader.DataError) as e:
        _load(other, recs, tmp_path)
    msg = str(e.value)
    assert "'conv-7'" in msg and "is not a token of the student's tokenizer" in msg
    first_unknown = next(t["token"] for t in recs[0]["meta"][tlp.KEY][0]
                         if tlp.token_map(other).id_of(t["token"].encode()) is None)
    assert repr(first_unknown) in msg


def test_a_reply_tokenized_differently_is_rejected_with_the_reason(smollm2, tmp_path):
    good = record("good", smollm2, [("Hi?", "Hello there.")])
    bad = record("bad", smollm2, [("Hi?", "Hello there.")], split_first=True)
    short = record("short", smollm2, [("Hi?", "Hello there.")])
    short["meta"][tlp.KEY] = []
    loaded = _load(smollm2, [good, bad, short], tmp_path)
    reasons = {r["id"]: r["reason"] for r in loaded.rejects}
    assert set(reasons) == {"bad", "short"}
    assert "record 'bad'" in reasons["bad"] and "tokenized differently" in reasons["bad"]
    assert "one entry per assistant turn" in reasons["short"]
    assert (loaded.rows["distill_weights"] > 0).any()
    # a paper-template rendering puts a space before the reply: not the target's tokens
    with pytest.raises(train_loader.DataError, match="no usable training examples.*tokenized differently"):
        _load(smollm2, [good], tmp_path, template="paper")


def test_build_keeps_entries_in_step_with_split_and_cleaned_turns():
    turns = [{"role": "system", "text": "S"}, {"role": "user", "text": "q1"}, {"role": "assistant", "text": "a1"},
             {"role": "user", "text": "q2"}, {"role": "assistant", "text": "a2\u200b here"},
             {"role": "user", "text": "q3"}, {"role": "assistant", "text": "a3"}]
    entries = [["e1"], ["e2"], ["e3"]]
    conv = P.Conv("s", "s:1", turns, {tlp.KEY: entries}, lengths=[1, 1, 1, 1, 1, 1, 1])
    cleaned = P.clean_step([conv], P.Options(), P.Ledger(["s"]))[0]
    assert cleaned.turns[4]["text"] != turns[4]["text"]
    assert cleaned.meta[tlp.KEY] == [["e1"], None, ["e3"]]  # the cleaned reply lost its target tokens

    class Counter:
        base = 0

        def total(self, lengths):
            return sum(lengths)

    conv = P.Conv("s", "s:1", turns, {tlp.KEY: entries}, lengths=[1, 2, 2, 2, 2, 2, 2])
    pieces = P.split_step([conv], Counter(), block_length=6)
    assert [p.meta[tlp.KEY] for p in pieces] == [[["e1"]], [["e2"]], [["e3"]]]
    assert P.eval_record(conv)["meta"][tlp.KEY] == [["e1"]]


def test_build_rejects_mismatched_replies_and_carries_the_rest(smollm2, tmp_path):
    from easylm_imitate.data import building
    from easylm_imitate.data.readers import ReadOptions
    from easylm_imitate.data.tokens import TokenCounter

    long = [(f"Question number {n} about the weather today?", f"Answer {n}: it is sunny and warm outside.")
            for n in range(3)]
    recs = [record("good", smollm2, long), record("bad", smollm2, [("Hi there, who are you?", "Hello there.")],
                                                  split_first=True),
            {"id": "plain", "source": "t", "turns": [{"role": "user", "text": "Is it raining in Paris now?"},
                                                     {"role": "assistant", "text": "No, it is not."}], "meta": {}}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    options = P.Options(eval_num_prompts=0, languages=(), dedup="off", block_length=60, template="chatml")
    spec = P.SourceSpec("canon", str(src), ReadOptions(kind="canonical"))
    report = building.build([spec], options, TokenCounter("chatml", smollm2), str(tmp_path / "out"), log=lambda m: None)
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["code"]) for r in rejects] == [("canon:bad", "target_logprobs")]
    assert "tokenized differently" in rejects[0]["reason"]
    assert report["accounting"]["balanced"] and report["steps"]["target_logprobs"]["canon"]["records"] == 2
    train = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    pieces = [r for r in train if r["id"].startswith("canon:good")]
    assert len(pieces) > 1  # split into blocks, each with its own replies' entries
    for piece in pieces:
        replies = [t["text"] for t in piece["turns"] if t["role"] == "assistant"]
        assert len(piece["meta"][tlp.KEY]) == len(replies)
        assert ["".join(t["token"] for t in e[:-1]) for e in piece["meta"][tlp.KEY]] == replies
    # the trainer takes the build's output as it is
    loaded = _load(smollm2, train, tmp_path)
    assert not loaded.rejects and (loaded.rows["distill_weights"] > 0).sum() == sum(
        len(e) for r in train for e in r["meta"].get(tlp.KEY, []))


def test_build_with_another_tokenizer_stops_in_one_error_line(smollm2, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(record("conv-7", smollm2, [("Where is it?", "Paris, of course.")])) + "\n")
    proc = subprocess.run([sys.executable, "-m", "easylm_imitate.data.build", f"--input=canonical:{src}",
                           f"--out={tmp_path / 'out'}", f"--tokenizer={TINY}", "--template=chatml",
                           "--eval_prompts=0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "'canonical:conv-7'" in last and "student's tokenizer" in last, last
    assert "Traceback" not in proc.stderr
