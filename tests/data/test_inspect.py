"""The loss-mask inspector: the marked spans are exactly the assistant turns and their end token
(for every template, in records and in packed rows), model text is escaped (HTML and terminal),
and the binary renders a config's records with counts and a summary."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from data_helpers import RECORD, write_jsonl

from easylm_imitate.data import inspect as insp
from easylm_imitate.data.packing import PackStats, next_token_pieces, pack_pieces
from easylm_imitate.data.templates import get_template

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPECTED = {  # the loss spans: each assistant turn and the token that ends it
    "paper": [" The capital of France is Paris.</s>", " Put the egg in boiling water for nine minutes.</s>"],
    "chatml": ["The capital of France is Paris.<|im_end|>", "Put the egg in boiling water for nine minutes.<|im_end|>"],
    "tokenizer": ["The capital of France is Paris.<|im_end|>",
                  "Put the egg in boiling water for nine minutes.<|im_end|>"],
}


@pytest.mark.parametrize("name", ["paper", "chatml", "tokenizer"])
def test_marked_spans_are_exactly_the_assistant_turns_and_their_end_token(name, bpe_tokenizer):
    ids, mask = get_template(name).render(RECORD, bpe_tokenizer)
    r = insp.inspect_ids("r", ids, mask, bpe_tokenizer)
    assert [s.text for s in r.spans if s.loss] == EXPECTED[name]
    assert "".join(s.text for s in r.spans) == bpe_tokenizer.decode(ids)  # nothing lost or doubled
    assert r.tokens == len(ids) and r.loss_tokens == sum(mask)
    plain = insp.format_terminal(r, color=False)
    assert [chunk.split("]]")[0] for chunk in plain.split("[[")[1:]] == EXPECTED[name]
    coloured = insp.format_terminal(r, color=True)
    assert [chunk.split(insp.RESET)[0] for chunk in coloured.split(insp.LOSS_ON)[1:]] == EXPECTED[name]


@pytest.mark.parametrize("name", ["paper", "chatml", "tokenizer"])
def test_packed_row_shows_the_same_spans(name, bpe_tokenizer):
    ids, mask = get_template(name).render(RECORD, bpe_tokenizer)
    other = {**RECORD, "turns": RECORD["turns"][1:3]}
    ids2, mask2 = get_template(name).render(other, bpe_tokenizer)
    stats = PackStats()
    pieces = next_token_pieces(ids, mask, 256, stats) + next_token_pieces(ids2, mask2, 256, stats)
    rows = pack_pieces(pieces, 256, bpe_tokenizer.pad_token_id, stats)
    segments = insp.packed_row_spans({k: v[0] for k, v in rows.items()}, bpe_tokenizer)
    assert [[s.text for s in seg.spans if s.loss] for seg in segments] == [EXPECTED[name], EXPECTED[name][:1]]
    preview = insp.packed_row_preview(rows, bpe_tokenizer, max_tokens=10_000, color=False)
    assert f"[[{EXPECTED[name][0]}]]" in preview and "segment 2" in preview
    short = insp.packed_row_preview(rows, bpe_tokenizer, max_tokens=12, color=False)
    assert "more tokens)" in short and EXPECTED[name][1] not in short


def test_html_escapes_model_text_and_highlights_loss(bpe_tokenizer):
    record = {**RECORD, "turns": [{"role": "user", "text": "Say <b>hi</b>"},
                                  {"role": "assistant", "text": "<script>alert('x')</script> & done"}]}
    ids, mask = get_template("chatml").render(record, bpe_tokenizer)
    r = insp.inspect_ids("record 0 <id>", ids, mask, bpe_tokenizer)
    page = insp.format_html([r], insp.summarize([r]), "t")
    assert "<script>" not in page and "<b>" not in page
    assert '<span class="loss" title="' in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; done&lt;|im_end|&gt;</span>" in page
    assert "record 0 &lt;id&gt;" in page


def test_terminal_output_never_executes_escapes_from_model_text(bpe_tokenizer):
    record = {**RECORD, "turns": [{"role": "user", "text": "hi"},
                                  {"role": "assistant", "text": "evil \x1b[2J\x1b]0;title\x07 text"}]}
    ids, mask = get_template("paper").render(record, bpe_tokenizer)
    r = insp.inspect_ids("r", ids, mask, bpe_tokenizer)
    plain = insp.format_terminal(r, color=False)
    assert "\x1b" not in plain and "\x07" not in plain and "\\x1b[2J" in plain
    coloured = insp.format_terminal(r, color=True)
    assert coloured.count("\x1b") == coloured.count(insp.RESET) * 2  # only our own on/off codes


def _inspect(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "easylm_imitate.data.inspect", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})


def test_binary_renders_the_configs_records_with_counts_and_a_summary(tmp_path, tokenizer_dir, bpe_tokenizer):
    data = write_jsonl(tmp_path / "train.jsonl", [
        RECORD, "{not json", {"id": "q", "source": "t", "turns": [{"role": "user", "text": "no reply"}]},
        {**RECORD, "id": "conv-2", "turns": [{"role": "user", "text": "Hi"},
                                             {"role": "assistant", "text": "<script>x</script>"}]}])
    config = tmp_path / "cfg.py"
    config.write_text("from easylm_imitate.train.config_defaults import default_config\n\n\n"
                      "def get_config():\n    c = default_config()\n"
                      f"    c.tokenizer = {tokenizer_dir!r}\n    c.data.train_file = {data!r}\n"
                      "    c.data.template = 'chatml'\n    return c\n")
    html_out = tmp_path / "mask.html"
    proc = _inspect(f"--config={config}", "--count=4", f"--html={html_out}", "--color=never")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    ids, mask = get_template("chatml").render(RECORD, bpe_tokenizer)
    ids2, mask2 = get_template("chatml").render({"turns": [{"role": "user", "text": "Hi"},
                                                           {"role": "assistant", "text": "<script>x</script>"}]},
                                                bpe_tokenizer)
    assert f"record 0 (line 1, id 'conv-1'): {len(ids)} tokens, {sum(mask)} with loss" in out
    assert f"[[{EXPECTED['chatml'][0]}]]" in out
    assert "record 1 (line 2): " in out and "record 2 (line 3, id 'q'): " in out
    tokens, loss = len(ids) + len(ids2), sum(mask) + sum(mask2)
    assert (f"summary: 4 records, {tokens} tokens, {loss} with loss ({loss / tokens:.1%}); "
            "1 records with no loss token; 1 records cannot be rendered") in out
    page = html_out.read_text()
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>" not in page

    one = _inspect(f"--config={config}", "--index=3", "--color=never", "--config.data.template=paper")
    assert one.returncode == 0, one.stderr[-3000:]
    assert "record 3 (line 4, id 'conv-2')" in one.stdout and "record 0 " not in one.stdout
    assert "[[ <script>x</script></s>]]" in one.stdout


def test_help_lists_the_flags():
    proc = _inspect("--help", timeout=120)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr  # absl's --help exits 1
    assert "loss" in proc.stdout.split("flags:")[0]  # the module docstring leads
    for flag in ("--config", "--index", "--count", "--html", "--color", "--max_tokens", "--file"):
        assert flag in proc.stdout, flag


@pytest.mark.parametrize("args, message", [
    ([], "error: --config=configs/FILE.py is required"),
    (["--config=configs/smoke.py", "--file=/no/such.jsonl"], "error: /no/such.jsonl: records file not found"),
    (["--config=configs/smoke.py", "--index=99999"], "error: --index=99999: "),
])
def test_bad_input_is_one_line(args, message):
    proc = _inspect(*args)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_trainer_prints_its_first_packed_row_marked_before_the_first_step(tmp_path):
    from support.train_helpers import smoke_config

    from easylm_imitate.train.trainer import train

    lines: list[str] = []
    config = smoke_config(**{"total_steps": 1, "eval_every_steps": 0, "data.eval_file": "", "save_every_steps": 100})
    train(config, str(tmp_path), log=lines.append)
    preview = next(k for k, line in enumerate(lines) if line.startswith("first packed row"))
    first_step = next(k for k, line in enumerate(lines) if "step" in line and k > preview)
    assert preview < first_step
    header, body = lines[preview].split("\n", 1)
    assert "at most 256 tokens shown" in header
    assert body.startswith("segment 1: ") and "[[" in body and "</s>]]" in body  # loss runs end with EOS
    assert "USER:" in body.split("[[")[0] and "USER:" not in "".join(x.split("]]")[0] for x in body.split("[[")[1:])
    print(lines[preview])
