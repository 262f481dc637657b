"""Token counts of conversations as the trainer will see them (rendered with the template).

For the `paper` and `chatml` templates a rendering is a fixed header plus independent
per-turn segments, so a record's length is `base + sum(turn lengths)` exactly; lengths are
cached per (role, text) and each distinct turn is tokenized once for the whole build. The
`tokenizer` template is not additive: per-turn lengths there are estimates (content tokens
plus a per-role overhead) used for statistics and block splitting, and the final counts are
exact renderings (`exact_counts`). `approx=True` replaces the tokenizer by a word/punctuation
count: fast, no tokenizer needed, and only ever an explicit choice.
"""

from __future__ import annotations

from collections.abc import Sequence

from easylm_imitate.data.progress import Progress, no_bars
from easylm_imitate.data.templates import (SegmentTemplate, TemplateError, approx_token_count, encode_texts,
                                           get_template)


class TokenCounter:
    """Counts tokens of canonical turns under one template and tokenizer (or approximately)."""

    def __init__(self, template: str, tokenizer=None, approx: bool = False):
        self.template = get_template(template)
        self.tokenizer = tokenizer
        self.approx = approx
        if not approx and tokenizer is None:
            raise ValueError("token counting needs the model's tokenizer (or the explicit approximate counter)")
        if approx and not isinstance(self.template, SegmentTemplate):
            raise ValueError(f"the approximate token counter supports templates paper and chatml, not {template!r}")
        self._cache: dict[tuple[str, str], int] = {}
        self._overhead = self._role_overheads() if not isinstance(self.template, SegmentTemplate) else {}
        self.base = self._base_length()

    @property
    def exact(self) -> bool:
        """True if `base + sum(turn lengths)` is the exact rendered length."""
        return isinstance(self.template, SegmentTemplate)

    def describe(self) -> str:
        """How tokens are counted, for the report."""
        if self.approx:
            return f"approximate (words and punctuation) on the {self.template.name} template"
        name = getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__
        return f"tokenizer {name} on the {self.template.name} template"

    def _base_length(self) -> int:
        if self.approx:
            return sum(self._segment_counts(self.template.header()))
        if isinstance(self.template, SegmentTemplate):
            from easylm_imitate.data.templates import _info

            return len(_info(self.tokenizer)["prefix"]) + sum(self._segment_counts(self.template.header()))
        return self._overhead.get("base", 0)

    def _role_overheads(self) -> dict[str, int]:
        """Tokens each role's wrapping adds in the tokenizer's own template (an estimate).

        Key "base" is the template's fixed header (e.g. a default system prompt).
        """
        x = {"content": "x"}
        c = len(encode_texts(["x"], self.tokenizer)[0])
        out = {"base": 0, "system": 0, "user": 0, "assistant": 0}
        try:
            one = self._render_len([{"role": "user", **x}])
            two = self._render_len([{"role": "user", **x}, {"role": "assistant", **x}])
            three = self._render_len([{"role": "user", **x}, {"role": "assistant", **x}, {"role": "user", **x}])
        except TemplateError:
            return out
        out["assistant"] = max(0, two - one - c)
        out["user"] = max(0, three - two - c)
        out["base"] = max(0, one - c - out["user"])
        try:
            out["system"] = max(0, self._render_len([{"role": "system", **x}, {"role": "user", **x}]) - one - c)
        except TemplateError:
            pass
        return out

    def _render_len(self, messages: list[dict]) -> int:
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        except Exception as e:
            raise TemplateError(f"the tokenizer's chat template failed: {e}") from e
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    def _segment_counts(self, segments) -> list[int]:
        counts = []
        texts = [seg[1] for seg in segments if seg[0] == "text" and seg[1]]
        if self.approx:
            encoded = iter([approx_token_count(t) for t in texts])
        else:
            encoded = iter(len(ids) for ids in encode_texts(texts, self.tokenizer))
        for kind, value, _ in segments:
            if kind == "text":
                counts.append(next(encoded) if value else 0)
            else:
                counts.append(1)
        return counts

    def turn_lengths(self, turns_list: Sequence[Sequence[dict]]) -> list[list[int]]:
        """Per-turn token counts of each conversation (batched; cached across calls)."""
        missing = {}
        for turns in turns_list:
            for turn in turns:
                key = (turn["role"], turn["text"])
                if key not in self._cache and key not in missing:
                    missing[key] = None
        if missing:
            keys = list(missing)
            if isinstance(self.template, SegmentTemplate):
                seg_lists = [self.template.turn({"role": r, "text": t}) for r, t in keys]
                flat = [seg for segs in seg_lists for seg in segs]
                counts = iter(self._segment_counts(flat))
                for key, segs in zip(keys, seg_lists):
                    self._cache[key] = sum(next(counts) for _ in segs)
            else:
                lengths = encode_texts([t for _, t in keys], self.tokenizer)
                for key, ids in zip(keys, lengths):
                    self._cache[key] = len(ids) + self._overhead.get(key[0], 0)
        return [[self._cache[(t["role"], t["text"])] for t in turns] for turns in turns_list]

    def total(self, lengths: Sequence[int]) -> int:
        """Tokens of a record whose turns have these lengths."""
        return self.base + sum(lengths)

    def exact_counts(self, records: Sequence[dict], progress: Progress = no_bars) -> list[int]:
        """Exact rendered lengths (a full rendering for non-additive templates)."""
        if self.exact:
            return [self.total(ls) for ls in self.turn_lengths([r["turns"] for r in records])]
        out = []
        with progress("render", len(records), "piece") as bar:
            for start in range(0, len(records), 256):
                batch = records[start:start + 256]
                out.extend(len(ids) for ids, _ in self.template.render_batch(batch, self.tokenizer))
                bar.update(len(batch))
        return out


def load_tokenizer(spec: str, flag: str | None = "--tokenizer"):
    """The model's Hugging Face tokenizer: a shipped name, directory, `.gguf` file, checkpoint
    or run directory, or hub id (see easylm_imitate.model_names)."""
    from easylm_imitate.model_names import load_tokenizer as resolve_and_load

    return resolve_and_load(spec, flag)
