"""See which tokens carry loss: records rendered through the configured template and tokenizer.

    python -m easylm_imitate.data.inspect --config=configs/smoke.py [--index=N] [--count=K] [--html=OUT]

Reads the training config (`configs/*.py`, `--config.x=v` overrides), loads its tokenizer
(`config.tokenizer`, else `config.init_from`) and renders records of `config.data.train_file`
(or `--file`) with `config.data.template`, exactly as the trainer does. The tokens that carry
loss are marked: coloured in a terminal (`[[...]]` when colour is off), highlighted spans in
HTML (`--html=OUT`, text HTML-escaped). Each shown record gets its token and loss-token
counts; the summary covers every record of the file: share of tokens with loss, records with
none, records that cannot be rendered. The trainer prints its first packed row the same way
(`packed_row_preview`) at start-up. Bad input is one `error: ...` line and exit status 1.
"""

from __future__ import annotations

import dataclasses
import html
import os
import sys
from collections.abc import Iterable, Sequence

import numpy as np

LOSS_ON, CONTEXT_ON, RESET = "\x1b[30;42m", "\x1b[2m", "\x1b[0m"
PLAIN_OPEN, PLAIN_CLOSE = "[[", "]]"
_BATCH = 256
_CONFIG = None  # the --config flag, defined only when run as a binary (the trainer has its own)


@dataclasses.dataclass
class Span:
    """A maximal run of tokens that all carry loss (or all do not), and its text."""

    text: str
    loss: bool
    ids: list[int]


@dataclasses.dataclass
class Inspected:
    """One record as the trainer sees it: spans, counts, or why it cannot be rendered."""

    label: str
    spans: list[Span] = dataclasses.field(default_factory=list)
    tokens: int = 0
    loss_tokens: int = 0
    error: str | None = None
    no_loss: bool = False  # the error is that no token carries loss



def loss_spans(ids: Sequence[int], mask: Sequence[float], tokenizer) -> list[Span]:
    """Split a rendering into runs of equal loss, each decoded to its text.

    Texts come from decoding growing prefixes, so a run keeps the spaces a tokenizer only
    shows in context (sentencepiece word starts); special tokens are shown as written.
    """
    ids = [int(i) for i in ids]
    runs: list[tuple[int, int, bool]] = []
    for k, m in enumerate(mask):
        loss = bool(m > 0)
        if runs and runs[-1][2] == loss:
            runs[-1] = (runs[-1][0], k + 1, loss)
        else:
            runs.append((k, k + 1, loss))
    spans, before = [], ""
    for start, end, loss in runs:
        upto = tokenizer.decode(ids[:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if upto.startswith(before):
            text = upto[len(before):]
        else:
            text = tokenizer.decode(ids[start:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        spans.append(Span(text, loss, ids[start:end]))
        before = upto
    return spans


def inspect_ids(label: str, ids: Sequence[int], mask: Sequence[float], tokenizer) -> Inspected:
    """An `Inspected` from token ids and their loss mask."""
    mask = np.asarray(mask, np.float32)
    return Inspected(label, loss_spans(ids, mask, tokenizer), len(ids), int((mask > 0).sum()))


def render_records(records: Sequence[tuple[str, object]], template, tokenizer) -> list[Inspected]:
    """Render (label, record or error) pairs; a record that cannot be rendered carries its error.

    Only counts are filled in (no spans): `inspect_ids` decodes the records to show.
    """
    from easylm_imitate.data.schema import RecordError, validate_record
    from easylm_imitate.data.templates import EmptyLossMask, TemplateError

    out: list[Inspected] = []
    for start in range(0, len(records), _BATCH):
        chunk = records[start:start + _BATCH]
        valid, errors, empty = [], {}, set()
        for k, (_, obj) in enumerate(chunk):
            try:
                if isinstance(obj, Exception):
                    raise obj
                valid.append((k, validate_record(obj)))
            except (RecordError, ValueError) as e:
                errors[k] = str(e)
        try:
            rendered = dict(zip([k for k, _ in valid], template.render_batch([r for _, r in valid], tokenizer)))
        except TemplateError:
            rendered = {}
            for k, record in valid:
                try:
                    rendered[k] = template.render(record, tokenizer)
                except TemplateError as e:
                    errors[k] = str(e)
                    if isinstance(e, EmptyLossMask):
                        empty.add(k)
        for k, (label, _) in enumerate(chunk):
            if k in errors:
                out.append(Inspected(label, error=errors[k], no_loss=k in empty))
            else:
                ids, mask = rendered[k]
                out.append(Inspected(label, tokens=len(ids), loss_tokens=int(sum(1 for m in mask if m > 0))))
    return out


def summarize(results: Iterable[Inspected]) -> dict:
    """Records, tokens, share of tokens with loss, records with none, records not renderable."""
    s = {"records": 0, "rendered": 0, "tokens": 0, "loss_tokens": 0, "records_without_loss": 0, "errors": 0}
    for r in results:
        s["records"] += 1
        if r.error is not None:
            s["records_without_loss" if r.no_loss else "errors"] += 1
            continue
        s["rendered"] += 1
        s["tokens"] += r.tokens
        s["loss_tokens"] += r.loss_tokens
        s["records_without_loss"] += r.loss_tokens == 0
    s["loss_share"] = s["loss_tokens"] / s["tokens"] if s["tokens"] else 0.0
    return s


def summary_line(s: dict) -> str:
    """The summary as one line of text."""
    return (f"summary: {s['records']} records, {s['tokens']} tokens, {s['loss_tokens']} with loss "
            f"({s['loss_share']:.1%}); {s['records_without_loss']} records with no loss token; "
            f"{s['errors']} records cannot be rendered")


def _visible(text: str) -> str:
    """Control characters (a reply's own ANSI escapes) shown as escapes, never executed."""
    return "".join(c if c in "\n\t" or c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _truncate(spans: Sequence[Span], max_tokens: int, tokenizer) -> tuple[list[Span], int]:
    """The spans cut after `max_tokens` tokens (0 = all), and how many tokens were cut."""
    if not max_tokens:
        return list(spans), 0
    out, used = [], 0
    for span in spans:
        if used + len(span.ids) <= max_tokens:
            out.append(span)
            used += len(span.ids)
            continue
        keep = max_tokens - used
        if keep > 0:
            ids = span.ids[:keep]
            out.append(Span(tokenizer.decode(ids, skip_special_tokens=False), span.loss, ids))
            used += keep
        break
    return out, sum(len(s.ids) for s in spans) - used


def counts_line(r: Inspected) -> str:
    """`label: N tokens, M with loss (x%)`, or the record's error."""
    if r.error is not None:
        return f"{r.label}: {r.error}"
    share = r.loss_tokens / r.tokens if r.tokens else 0.0
    return f"{r.label}: {r.tokens} tokens, {r.loss_tokens} with loss ({share:.1%})"


def format_terminal(r: Inspected, color: bool, max_tokens: int = 0, tokenizer=None) -> str:
    """A record for a terminal: counts, then its text with the loss tokens marked."""
    spans, cut = _truncate(r.spans, max_tokens, tokenizer)
    parts = []
    for span in spans:
        text = _visible(span.text)
        if not color:
            parts.append(f"{PLAIN_OPEN}{text}{PLAIN_CLOSE}" if span.loss else text)
        else:
            on = LOSS_ON if span.loss else CONTEXT_ON
            parts.append("\n".join(f"{on}{line}{RESET}" if line else "" for line in text.split("\n")))
    body = "".join(parts)
    if cut:
        body += f"\n... ({cut} more tokens)"
    return counts_line(r) + ("\n" + body if r.error is None else "")


def format_html(results: Sequence[Inspected], summary: dict, title: str) -> str:
    """A standalone HTML page: the summary, then each record with its loss tokens highlighted."""
    e = html.escape
    sections = []
    for r in results:
        body = "".join(f'<span class="{"loss" if s.loss else "ctx"}" title="{len(s.ids)} tokens'
                       f'{" with loss" if s.loss else ""}">{e(s.text)}</span>' for s in r.spans)
        sections.append(f"<section><h2>{e(counts_line(r))}</h2>" + (f"<pre>{body}</pre>" if r.error is None else "")
                        + "</section>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + e(title) + "</title><style>"
            "body{font-family:sans-serif;margin:2em}pre{white-space:pre-wrap;font-size:14px;line-height:1.5}"
            ".loss{background:#b7f0b1}.ctx{color:#666}h2{font-size:15px}</style></head><body>"
            f"<h1>{e(title)}</h1><p>{e(summary_line(summary))}</p>"
            "<p>Highlighted: tokens that carry loss (assistant text and the token that ends it).</p>"
            + "".join(sections) + "</body></html>\n")


def packed_row_spans(row: dict[str, np.ndarray], tokenizer) -> list[Inspected]:
    """The examples in one packed training row, as token ids and loss marks.

    Segment s holds next-token pairs; its tokens are the first input followed by the targets,
    and a target carries loss where its weight is > 0 (the first token never does).
    """
    out = []
    segments = np.asarray(row["segment_ids"])
    for s in [int(x) for x in np.unique(segments) if x > 0]:
        where = np.flatnonzero(segments == s)
        ids = [int(row["inputs"][where[0]])] + [int(t) for t in np.asarray(row["targets"])[where]]
        mask = np.concatenate([[0.0], np.asarray(row["weights"], np.float32)[where]])
        out.append(inspect_ids(f"segment {s}", ids, mask, tokenizer))
    return out


def packed_row_preview(rows: dict[str, np.ndarray], tokenizer, max_tokens: int = 256, color: bool | None = None) -> str:
    """The first packed row, marked, cut after `max_tokens` tokens: what the trainer prints."""
    if color is None:
        color = sys.stdout.isatty()
    row = {k: rows[k][0] for k in ("inputs", "targets", "weights", "segment_ids")}
    parts, left = [], max_tokens
    for r in packed_row_spans(row, tokenizer):
        if left <= 0:
            parts.append("...")
            break
        parts.append(format_terminal(r, color, left, tokenizer))
        left -= r.tokens
    marks = "coloured" if color else f"in {PLAIN_OPEN}{PLAIN_CLOSE}"
    return (f"first packed row (tokens that carry loss {marks}; at most {max_tokens} tokens shown):\n"
            + "\n".join(parts))


# ---------------------------------------------------------------- binary


def _read(path: str) -> list[tuple[str, object]]:
    from easylm_imitate.fileio import iter_jsonl

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: records file not found")
    out = []
    for n, (line, obj) in enumerate(iter_jsonl(path)):
        rid = obj.get("id") if isinstance(obj, dict) else None
        out.append((f"record {n} (line {line}" + (f", id {rid!r})" if isinstance(rid, str) else ")"), obj))
    return out


def main(argv) -> None:
    """Render records of the config's training file with the loss tokens marked."""
    from absl import flags

    from easylm_imitate import model_names
    from easylm_imitate.cli_logging import quiet_logs_by_default
    from easylm_imitate.data.templates import get_template
    from easylm_imitate.fileio import atomic_open

    f = flags.FLAGS
    quiet_logs_by_default()
    try:
        if len(argv) > 1:
            raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
        config = _CONFIG.value
        if config is None:
            raise ValueError("--config=configs/FILE.py is required (a training config)")
        path = f.file or config.data.train_file
        if not path:
            raise ValueError("no records file: set --file or config.data.train_file")
        count = f.count if f["count"].present or not f["index"].present else 1
        if f.index < 0 or count < 0 or f.max_tokens < 0:
            raise ValueError("--index, --count and --max_tokens must be >= 0")
        template = get_template(config.data.template)
        records = _read(path)
        if f.index >= len(records) and records:
            raise ValueError(f"--index={f.index}: {path} has {len(records)} records")
        tokenizer = model_names.load_tokenizer(config.tokenizer or config.init_from, "--config.tokenizer")
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}".splitlines()[0]) from None
    counted = records[:f.summary_records] if f.summary_records else records
    results = render_records(counted, template, tokenizer)
    if len(counted) < f.index + count:
        results += render_records(records[len(counted):f.index + count], template, tokenizer)
    shown = []
    for k in range(f.index, min(f.index + count, len(records))):
        r = results[k]
        if r.error is None:
            ids, mask = template.render(records[k][1], tokenizer)
            r = inspect_ids(r.label, ids, mask, tokenizer)
        shown.append(r)
    color = f.color == "always" or (f.color == "auto" and sys.stdout.isatty())
    marks = "coloured" if color else f"in {PLAIN_OPEN}{PLAIN_CLOSE}"
    print(f"{path}: template {config.data.template}, tokenizer {getattr(tokenizer, 'name_or_path', '') or '?'}; "
          f"tokens that carry loss are {marks}")
    for r in shown:
        print()
        print(format_terminal(r, color, f.max_tokens, tokenizer))
    summary = summarize(results[:len(counted)])
    print()
    print(summary_line(summary) + ("" if not f.summary_records else f" (first {len(counted)} of {len(records)})"))
    if f.html:
        with atomic_open(f.html) as out:
            out.write(format_html(shown, summary, f"loss mask: {os.path.basename(path)} ({config.data.template})"))
        print(f"wrote {f.html}")


def _define_flags():
    from absl import flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)
    flags.DEFINE_string("file", None, "Records (canonical JSONL) to render; default: config.data.train_file.")
    flags.DEFINE_integer("index", 0, "First record shown (0-based, in file order).")
    flags.DEFINE_integer("count", 3, "Records shown (default 3; 1 when --index is given).")
    flags.DEFINE_string("html", None, "Also write the shown records as HTML with the loss tokens highlighted.")
    flags.DEFINE_enum("color", "auto", ["auto", "always", "never"],
                      "Terminal colour (auto: when stdout is a terminal).")
    flags.DEFINE_integer("max_tokens", 0, "Show at most this many tokens of each record (0 = all).")
    flags.DEFINE_integer("summary_records", 0, "Records counted in the summary (0 = every record of the file).")
    return config


if __name__ == "__main__":
    from absl import app

    _CONFIG = _define_flags()  # noqa: F811
    app.run(main)
