"""Source readers: formats, damaged files, .gz, Hugging Face datasets and TFDS."""

from __future__ import annotations

import gzip
import json
import os
import sys
import textwrap

import pytest
from data_helpers import write_jsonl

from easylm_imitate.data.readers import ConvertError, ReadOptions, convert, iter_file, iter_items


def records(path, kind, **options):
    """(records, errors) of a source: records as (id, turns, meta), errors as (line, code)."""
    opts = ReadOptions(kind=kind, **options)
    out, errors = [], []
    for item in iter_items(str(path), opts):
        if item.error:
            errors.append((item.line, item.code))
            continue
        try:
            out.extend(convert(item.obj, opts))
        except ConvertError as e:
            errors.append((item.line, e.code))
    return out, errors


def test_hc3_keeps_only_chatgpt_answers_one_record_each(tmp_path):
    path = write_jsonl(tmp_path / "hc3.jsonl", [
        {"id": 7, "question": "Why is the sky blue?", "human_answers": ["Because."],
         "chatgpt_answers": ["Rayleigh scattering.", "Short wavelengths scatter more."], "source": "reddit_eli5"},
        {"question": "What is 2+2?", "human_answers": ["4"], "chatgpt_answers": ["2+2 equals 4."]},
        {"question": "No answers?", "human_answers": ["x"], "chatgpt_answers": []},
    ])
    got, errors = records(path, "hc3")
    assert got == [
        ("7-0", [{"role": "user", "text": "Why is the sky blue?"}, {"role": "assistant", "text": "Rayleigh scattering."}],
         {"answer": 0, "hc3_source": "reddit_eli5"}),
        ("7-1", [{"role": "user", "text": "Why is the sky blue?"},
                 {"role": "assistant", "text": "Short wavelengths scatter more."}], {"answer": 1, "hc3_source": "reddit_eli5"}),
        (None, [{"role": "user", "text": "What is 2+2?"}, {"role": "assistant", "text": "2+2 equals 4."}], {"answer": 0}),
    ]
    assert errors == [(3, "no_exchange")]


def test_discord_pairs_with_configured_field_names(tmp_path):
    path = write_jsonl(tmp_path / "discord.jsonl", [
        {"msg_id": "d1", "prompt": {"content": "hey bot, tell me a joke"}, "reply": "Why did the chicken..."},
        {"msg_id": "d2", "prompt": {"content": "thanks"}},
    ])
    got, errors = records(path, "pairs", input_field="prompt.content", output_field="reply", id_field="msg_id")
    assert got == [("d1", [{"role": "user", "text": "hey bot, tell me a joke"},
                           {"role": "assistant", "text": "Why did the chicken..."}], {})]
    assert errors == [(2, "missing_field")]


def test_openai_messages(tmp_path):
    path = write_jsonl(tmp_path / "messages.jsonl", [
        {"messages": [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]}]},
        {"id": "m2", "messages": [{"role": "user", "content": "weather?"}, {"role": "tool", "content": "{}"}]},
    ])
    got, errors = records(path, "messages")
    assert got == [(None, [{"role": "system", "text": "Be terse."}, {"role": "user", "text": "Hi"},
                           {"role": "assistant", "text": "Hello"}], {})]
    assert errors == [(2, "unknown_role")]


def test_alpaca_json_array(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name a color.", "input": "", "output": "Blue"},
    ], indent=2))
    got, errors = records(path, "alpaca")
    assert [t for _, t, _ in got] == [
        [{"role": "user", "text": "Translate to French.\n\nGood morning"}, {"role": "assistant", "text": "Bonjour"}],
        [{"role": "user", "text": "Name a color."}, {"role": "assistant", "text": "Blue"}]]
    assert errors == []


def test_sharegpt_roles_are_normalised(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "conversations": [
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, {"from": "USER", "value": "q2"},
        {"from": "chatgpt", "value": "a2"}, {"from": "system", "value": "s"}]}])
    got, _ = records(path, "sharegpt")
    assert [t["role"] for t in got[0][1]] == ["user", "assistant", "user", "assistant", "system"]


def _sharegpt_array(n):
    return [{"id": f"c{i}", "conversations": [{"from": "human", "value": f"question {i}"},
                                              {"from": "gpt", "value": f"answer {i}"}]} for i in range(n)]


def test_truncated_json_array_keeps_every_complete_conversation(tmp_path):
    text = json.dumps(_sharegpt_array(5), indent=2)
    cut = text.index('"c4"') + 10  # inside the last record
    path = tmp_path / "cut.json"
    path.write_text(text[:cut])
    items = list(iter_file(str(path)))
    assert [i.obj["id"] for i in items if i.obj] == ["c0", "c1", "c2", "c3"]
    assert [(i.code, i.line) for i in items if i.error] == [("truncated", text[:text.index('"c4"')].count("\n"))]


def test_damaged_json_array_resumes_after_a_bad_record_and_bad_bytes(tmp_path):
    text = json.dumps(_sharegpt_array(4), indent=2)
    text = text.replace('"question 1"', '"question 1" oops', 1)
    data = text.encode().replace(b"answer 2", b"answer \xff\xfe 2", 1)
    path = tmp_path / "bad.json"
    path.write_bytes(data)
    items = list(iter_file(str(path)))
    assert [i.obj["id"] for i in items if i.obj] == ["c0", "c3"]
    assert [i.code for i in items if i.error] == ["invalid_json", "invalid_utf8"]
    assert all(i.line > 1 for i in items)


def test_gzip_files_are_read(tmp_path):
    path = tmp_path / "s.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for row in _sharegpt_array(3):
            f.write(json.dumps(row) + "\n")
    got, errors = records(path, "sharegpt")
    assert [rid for rid, _, _ in got] == ["c0", "c1", "c2"] and errors == []
    arr = tmp_path / "s.json.gz"
    with gzip.open(arr, "wt", encoding="utf-8") as f:
        json.dump(_sharegpt_array(2), f)
    assert [rid for rid, _, _ in records(arr, "sharegpt")[0]] == ["c0", "c1"]


def test_max_items_caps_reading(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", _sharegpt_array(10))
    got, _ = records(path, "sharegpt", max_items=4)
    assert len(got) == 4


def test_hugging_face_dataset_from_disk(tmp_path):
    import datasets

    rows = _sharegpt_array(3)
    ds = datasets.Dataset.from_list(rows)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "hf"))
    got, errors = records(f"hf:{tmp_path / 'hf'}", "sharegpt")
    assert [(rid, t[1]["text"]) for rid, t, _ in got] == [("c0", "answer 0"), ("c1", "answer 1"), ("c2", "answer 2")]
    assert errors == []


TFDS_MODULE = textwrap.dedent('''
    import tensorflow_datasets as tfds

    class TinyPairs(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "input": tfds.features.Text(), "output": tfds.features.Text(),
                "conversations": tfds.features.Sequence({"from": tfds.features.Text(),
                                                         "value": tfds.features.Text()})}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(3):
                yield i, {"input": f"question {i} \u00e9", "output": f"answer {i}",
                          "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
''')


def test_tfds_data_source(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    (tmp_path / "tiny_pairs_builder.py").write_text(TFDS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tiny_pairs_builder

    data_dir = tmp_path / "tfds"
    tiny_pairs_builder.TinyPairs(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    builder_dir = os.path.join(str(data_dir), "tiny_pairs", "1.0.0")
    got, errors = records(f"tfds:{builder_dir}", "pairs")
    assert sorted(t[0]["text"] for _, t, _ in got) == ["question 0 \u00e9", "question 1 \u00e9", "question 2 \u00e9"]
    got, errors = records("tfds:tiny_pairs", "sharegpt", tfds_data_dir=str(data_dir))
    assert sorted(t[1]["text"] for _, t, _ in got) == ["a0", "a1", "a2"] and errors == []
    sys.modules.pop("tiny_pairs_builder", None)
