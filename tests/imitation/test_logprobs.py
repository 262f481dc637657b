"""`collect --top_logprobs=K`: the target's per-token top-K log-probabilities in meta["target_logprobs"],
one entry per assistant turn (the OpenAI `choices[0].logprobs.content` list), live, batch and from the journal."""

import json
import subprocess
import sys

import openai
import pytest

from easylm_imitate.data.schema import validate_record
from easylm_imitate.imitation.client import normalize_request
from easylm_imitate.testing import OpenAIStub


def _collect(stub, prompts, out, *extra):
    cmd = [sys.executable, "-m", "easylm_imitate.imitation.collect", f"--base_url={stub.base_url}", "--model=stub",
           f"--prompts={prompts}", f"--out={out}", "--api_key_env=", "--noprogress", "--batch_poll_seconds=0.05",
           *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _write_prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = [{"id": "single", "prompt": "name three rivers"},
             {"id": "multi", "source": "sharegpt", "turns": [{"role": "user", "text": "hi"},
                                                            {"role": "assistant", "text": "hello"},
                                                            {"role": "user", "text": "tell me a joke"}]}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _check_entry(content, text, k):
    assert isinstance(content, list) and content
    assert "".join(t["token"] for t in content) == text
    for t in content:
        assert set(t) == {"token", "logprob", "bytes", "top_logprobs"}
        assert isinstance(t["logprob"], float) and t["logprob"] <= 0
        assert t["bytes"] == list(t["token"].encode())
        assert len(t["top_logprobs"]) == k
        for alt in t["top_logprobs"]:
            assert set(alt) == {"token", "logprob", "bytes"} and isinstance(alt["logprob"], float)
        if k:
            assert t["top_logprobs"][0]["token"] == t["token"]


@pytest.mark.parametrize("mode", ["live", "batch"])
def test_top_logprobs_are_stored_per_assistant_turn_and_survive_a_rerun(tmp_path, mode):
    prompts, out = _write_prompts(tmp_path), tmp_path / "out.jsonl"
    extra = ("--top_logprobs=3",) + (("--batch_api",) if mode == "batch" else ())
    with OpenAIStub() as stub:
        done = _collect(stub, prompts, out, *extra)
        assert done.returncode == 0, done.stderr
        sent = [r.body for r in stub.request_log] or [json.loads(line)["body"] for f in stub.batches.files.values()
                                                      if f.purpose == "batch" for line in f.data.splitlines()]
        assert all(b["logprobs"] is True and b["top_logprobs"] == 3 for b in sent) and len(sent) == 2
        first = out.read_text()
        again = _collect(stub, prompts, out, *extra)  # answered from the journal, logprobs included
        assert again.returncode == 0 and out.read_text() == first
        assert stub.billing[mode]["requests"] == 2
    records = {r["id"]: r for r in map(json.loads, first.splitlines())}
    for r in records.values():
        validate_record(r)
    single, multi = records["single"], records["multi"]
    assert len(single["meta"]["target_logprobs"]) == 1
    _check_entry(single["meta"]["target_logprobs"][0], single["turns"][-1]["text"], 3)
    assert multi["meta"]["target_logprobs"][0] is None  # the prompt's own assistant turn
    _check_entry(multi["meta"]["target_logprobs"][1], multi["turns"][-1]["text"], 3)


def test_without_the_flag_nothing_is_asked_or_stored_and_k_is_range_checked(tmp_path):
    prompts, out = _write_prompts(tmp_path), tmp_path / "out.jsonl"
    with OpenAIStub() as stub:
        assert _collect(stub, prompts, out).returncode == 0
        assert all("logprobs" not in r.body for r in stub.request_log)
        assert all("target_logprobs" not in json.loads(line)["meta"] for line in out.read_text().splitlines())
        zero = _collect(stub, prompts, tmp_path / "zero.jsonl", "--top_logprobs=0")
        assert zero.returncode == 0
        rec = json.loads((tmp_path / "zero.jsonl").read_text().splitlines()[0])
        _check_entry(rec["meta"]["target_logprobs"][0], rec["turns"][-1]["text"], 0)
        bad = _collect(stub, prompts, out, "--top_logprobs=21")
        assert bad.returncode != 0 and "top_logprobs" in bad.stderr
    with pytest.raises(ValueError, match="top_logprobs"):
        normalize_request({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 21})
    assert normalize_request({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})["logprobs"] is True


def test_the_stub_returns_logprobs_only_when_asked_and_stops_at_max_tokens():
    with OpenAIStub(responder=lambda body: "one two three four") as stub:
        client = openai.OpenAI(base_url=stub.base_url, api_key="x", max_retries=0)
        messages = [{"role": "user", "content": "count"}]
        plain = client.chat.completions.create(model="stub", messages=messages)
        assert plain.choices[0].logprobs is None
        asked = client.chat.completions.create(model="stub", messages=messages, logprobs=True, top_logprobs=2,
                                               max_tokens=3)
        choice = asked.choices[0]
        assert choice.message.content == "one two three" and choice.finish_reason == "length"
        assert [t.token for t in choice.logprobs.content] == ["one", " two", " three"]
        assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
                   for t in choice.logprobs.content)
        assert asked.usage.completion_tokens == 3
        assert stub.billing["live"] == {"requests": 2, "prompt_tokens": 2, "completion_tokens": 7}
