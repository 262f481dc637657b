"""Binaries keep library INFO lines (Orbax files, httpx requests) out of the progress bars
unless --verbosity asks for them, and `--help` starts with what the binary does."""

import os
import subprocess
import sys

from easylm_imitate.testing import OpenAIStub

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _collect(stub, tmp_path, *extra) -> subprocess.CompletedProcess:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "what is a river?"}\n')
    out = tmp_path / f"out{len(extra)}.jsonl"
    return subprocess.run([sys.executable, "-m", "easylm_imitate.imitation.collect", f"--base_url={stub.base_url}",
                           "--model=stub", f"--prompts={prompts}", f"--out={out}", "--api_key_env=", "--noprogress",
                           *extra], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_http_request_lines_only_with_verbosity(tmp_path):
    with OpenAIStub(responder=lambda body: "a river is water") as stub:
        quiet = _collect(stub, tmp_path)
        loud = _collect(stub, tmp_path, "--verbosity=0")
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert "HTTP Request" not in quiet.stderr and "wrote 1 records" in quiet.stderr
    assert "HTTP Request" in loud.stderr


def test_train_help_starts_with_a_description():
    proc = subprocess.run([sys.executable, "-m", "easylm_imitate.train", "--help"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.stdout.startswith("Fine-tune a model on canonical conversation JSONL"), proc.stdout[:200]
    assert "--workdir" in proc.stdout
