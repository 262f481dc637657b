"""Chat templates: a canonical record -> token ids and a loss mask.

`mask[i] == 1` exactly on the tokens the model must learn to produce: the text of each
assistant turn and the token that ends it (EOS for `paper`, `<|im_end|>` for `chatml`, the
template's own end-of-turn for `tokenizer`). Everything else (system and user text, role
markers, the assistant opener, separators) has mask 0. A record whose mask is all zero is an
`EmptyLossMask` error, never a silent no-op.

Templates
- `paper`: the authors' format. `BEGINNING OF CONVERSATION:`, the system text (if any), then
  per exchange ` USER: <text> GPT: <reply></s>` (`</s>` = the tokenizer's EOS).
- `chatml`: `<|im_start|>role\\n<text><|im_end|>\\n` per turn; the tokenizer must have the
  two ChatML tokens.
- `tokenizer`: the tokenizer's own `chat_template` (`apply_chat_template`); the mask comes
  from rendering the conversation prefix by prefix (with and without the generation prompt).

Text is tokenized segment by segment (role markers, contents and special tokens separately),
so a mask boundary never falls inside a token, and the tokens of a conversation prefix are
the same whether it is rendered for training (`render`) or for generation (`prompt`).
Contents are tokenized with special-token matching off: a user who types `</s>` or
`<|im_end|>` gets those characters, not the control token. For `paper` and `chatml`, special
tokens the tokenizer itself puts before a sequence (LLaMA's BOS) open the rendering.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence

ENCODE_BATCH = 512


class TemplateError(ValueError):
    """A record (or tokenizer) the template cannot render; the message names the record."""


class EmptyLossMask(TemplateError):
    """A rendered record with no token to learn from (no assistant turn, or nothing rendered)."""


# A segment is (kind, value, loss): kind "text" (tokenized) or "special" (one token: "bos",
# "eos" or a literal token such as "<|im_start|>").
Segment = tuple


def _text(value: str, loss: int = 0) -> Segment:
    return ("text", value, loss)


def _special(name: str, loss: int = 0) -> Segment:
    return ("special", name, loss)


_TOKENIZER_INFO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _info(tokenizer) -> dict:
    """Per-tokenizer facts the templates need, computed once."""
    try:
        return _TOKENIZER_INFO[tokenizer]
    except (KeyError, TypeError):
        pass
    bare = tokenizer.encode("x", add_special_tokens=False)
    full = tokenizer.encode("x", add_special_tokens=True)
    prefix = []
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            prefix = full[:start]
            break
    joined = "".join(tokenizer.convert_ids_to_tokens(bare))
    # Tokenizers that mark a word start themselves (sentencepiece "▁x", GPT-2 with
    # add_prefix_space "Ġx") would double a leading space, so it is dropped from segments.
    strip_space = len(joined) == 2 and joined[1] == "x" and joined[0] in "▁Ġ "
    info = {"prefix": list(prefix), "strip_space": strip_space}
    try:
        _TOKENIZER_INFO[tokenizer] = info
    except TypeError:
        pass
    return info


def special_id(tokenizer, name: str) -> int:
    """Id of a special token ("bos", "eos" or a literal token); TemplateError if it has none."""
    if name in ("bos", "eos"):
        tid = getattr(tokenizer, f"{name}_token_id")
        if tid is None:
            raise TemplateError(f"the tokenizer has no {name.upper()} token, which this template needs")
        return int(tid)
    tid = tokenizer.convert_tokens_to_ids(name)
    if tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id
                       and name != tokenizer.unk_token):
        raise TemplateError(f"the tokenizer has no {name!r} token; add it (ChatML special tokens) "
                            f"or use template 'paper'")
    return int(tid)


def encode_texts(texts: Sequence[str], tokenizer) -> list[list[int]]:
    """Token ids of each text, with no added special tokens and special-token matching off."""
    strip = _info(tokenizer)["strip_space"]
    if strip:
        texts = [t[1:] if t.startswith(" ") else t for t in texts]
    out: list[list[int]] = []
    for start in range(0, len(texts), ENCODE_BATCH):
        chunk = list(texts[start:start + ENCODE_BATCH])
        if chunk:
            out.extend(tokenizer(chunk, add_special_tokens=False, split_special_tokens=True)["input_ids"])
    return [list(ids) for ids in out]


def tokenize_segments(segment_lists: Sequence[Sequence[Segment]], tokenizer) -> list[tuple[list[int], list[int]]]:
    """(ids, mask) for each list of segments; texts are encoded in batches."""
    texts = [seg[1] for segs in segment_lists for seg in segs if seg[0] == "text" and seg[1]]
    encoded = iter(encode_texts(texts, tokenizer))
    out = []
    for segs in segment_lists:
        ids: list[int] = []
        mask: list[int] = []
        for kind, value, loss in segs:
            if kind == "text":
                if not value:
                    continue
                piece = next(encoded)
            else:
                piece = [special_id(tokenizer, value)]
            ids.extend(piece)
            mask.extend([loss] * len(piece))
        out.append((ids, mask))
    return out


def _check_mask(record: dict, mask: list[int]) -> None:
    if not any(mask):
        rid = record.get("id", "<no id>") if isinstance(record, dict) else "<no id>"
        raise EmptyLossMask(f"record {rid!r}: loss mask is all zero (no assistant tokens to learn)")


def _turns_of(record: dict) -> list[dict]:
    turns = record.get("turns") if isinstance(record, dict) else None
    if not isinstance(turns, list):
        raise TemplateError(f"record {record.get('id', '<no id>') if isinstance(record, dict) else '<no id>'!r}: "
                            "no 'turns' list")
    return turns


class SegmentTemplate:
    """A template whose rendering is a fixed header plus independent per-turn segments.

    Token counts add up: len(render(record)) == header length + sum of per-turn lengths.
    """

    name = ""
    additive = True

    def header(self) -> list[Segment]:
        """Segments before the first turn."""
        return []

    def turn(self, turn: dict) -> list[Segment]:
        """Segments of one turn."""
        raise NotImplementedError

    def opener(self) -> list[Segment]:
        """Segments that open an assistant turn (the generation prompt)."""
        raise NotImplementedError

    def segments(self, record: dict) -> list[Segment]:
        """All segments of a record (without the tokenizer's own prefix tokens)."""
        out = list(self.header())
        for turn in _turns_of(record):
            out.extend(self.turn(turn))
        return out

    def render_batch(self, records: Sequence[dict], tokenizer) -> list[tuple[list[int], list[int]]]:
        """(ids, mask) for each record; raises EmptyLossMask naming the first bad record."""
        prefix = _info(tokenizer)["prefix"]
        rendered = tokenize_segments([self.segments(r) for r in records], tokenizer)
        out = []
        for record, (ids, mask) in zip(records, rendered):
            ids, mask = prefix + ids, [0] * len(prefix) + mask
            _check_mask(record, mask)
            out.append((ids, mask))
        return out

    def render(self, record: dict, tokenizer) -> tuple[list[int], list[int]]:
        """Token ids and loss mask of one record."""
        return self.render_batch([record], tokenizer)[0]

    def prompt(self, turns: Sequence[dict], tokenizer) -> list[int]:
        """Ids of a conversation ending in a user turn, plus the assistant opener."""
        segs = list(self.header())
        for turn in turns:
            segs.extend(self.turn(turn))
        segs.extend(self.opener())
        ids, _ = tokenize_segments([segs], tokenizer)[0]
        return _info(tokenizer)["prefix"] + ids


class PaperTemplate(SegmentTemplate):
    """`BEGINNING OF CONVERSATION: [system] USER: q GPT: a</s> USER: ...` (Koala/EasyLM)."""

    name = "paper"

    def header(self) -> list[Segment]:
        return [_text("BEGINNING OF CONVERSATION:")]

    def turn(self, turn: dict) -> list[Segment]:
        role, text = turn["role"], turn["text"]
        if role == "user":
            return [_text(" USER: " + text)]
        if role == "assistant":
            return [_text(" GPT:"), _text(" " + text, 1), _special("eos", 1)]
        if role == "system":
            return [_text(" " + text)]
        raise TemplateError(f"unknown role {role!r}")

    def opener(self) -> list[Segment]:
        return [_text(" GPT:")]


class ChatMLTemplate(SegmentTemplate):
    """`<|im_start|>role\\ntext<|im_end|>\\n` per turn; loss on assistant text + `<|im_end|>`."""

    name = "chatml"
    START, END = "<|im_start|>", "<|im_end|>"

    def turn(self, turn: dict) -> list[Segment]:
        role, text = turn["role"], turn["text"]
        if role not in ("system", "user", "assistant"):
            raise TemplateError(f"unknown role {role!r}")
        loss = 1 if role == "assistant" else 0
        return [_special(self.START), _text(role + "\n"), _text(text, loss), _special(self.END, loss), _text("\n")]

    def opener(self) -> list[Segment]:
        return [_special(self.START), _text("assistant\n")]


class TokenizerTemplate:
    """The tokenizer's own chat template; the mask is found by rendering prefixes.

    For assistant turn i, P = render(turns[:i], add_generation_prompt=True) and
    Q = render(turns[:i+1]); the characters between them (less trailing whitespace) are the
    turn's loss span. The template must be prefix-stable (P a prefix of Q, Q of the full
    rendering); one that is not (e.g. it rewrites earlier turns) is a TemplateError.
    """

    name = "tokenizer"
    additive = False

    @staticmethod
    def _messages(turns: Sequence[dict]) -> list[dict]:
        return [{"role": t["role"], "content": t["text"]} for t in turns]

    @staticmethod
    def _apply(tokenizer, messages, generation: bool, rid: str) -> str:
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError("the tokenizer has no chat_template; use template 'paper' or 'chatml'")
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
        except Exception as e:  # jinja's raise_exception and template bugs alike
            raise TemplateError(f"record {rid!r}: the tokenizer's chat template failed: {e}") from e
        return text if isinstance(text, str) else str(text)

    def _spans(self, record: dict, tokenizer) -> tuple[str, list[tuple[int, int, int]]]:
        """The full rendering and its (start, end, loss) character spans."""
        rid = record.get("id", "<no id>")
        turns = _turns_of(record)
        messages = self._messages(turns)
        full = self._apply(tokenizer, messages, False, rid)
        cuts = []
        for i, turn in enumerate(turns):
            if turn["role"] != "assistant":
                continue
            before = self._apply(tokenizer, messages[:i], True, rid) if i else self._apply(tokenizer, [], True, rid)
            upto = self._apply(tokenizer, messages[:i + 1], False, rid)
            if not (upto.startswith(before) and full.startswith(upto)):
                raise TemplateError(f"record {rid!r}: the tokenizer's chat template is not prefix-stable at turn {i} "
                                    "(it renders earlier turns differently once later ones exist); "
                                    "use template 'chatml' or 'paper'")
            end = len(upto.rstrip())
            if end > len(before):
                cuts.append((len(before), end))
        spans, pos = [], 0
        for start, end in cuts:
            if start < pos:
                raise TemplateError(f"record {rid!r}: overlapping assistant spans in the chat template")
            spans += [(pos, start, 0), (start, end, 1)]
            pos = end
        spans.append((pos, len(full), 0))
        return full, [s for s in spans if s[1] > s[0]]

    def _encode(self, texts: Sequence[str], tokenizer) -> list[list[int]]:
        # The template's own text carries its special tokens, so they are matched here.
        out: list[list[int]] = []
        for start in range(0, len(texts), ENCODE_BATCH):
            chunk = list(texts[start:start + ENCODE_BATCH])
            if chunk:
                out.extend(list(x) for x in tokenizer(chunk, add_special_tokens=False)["input_ids"])
        return out

    def render_batch(self, records: Sequence[dict], tokenizer) -> list[tuple[list[int], list[int]]]:
        """(ids, mask) for each record; raises TemplateError/EmptyLossMask naming the record."""
        all_spans = [self._spans(r, tokenizer) for r in records]
        texts = [full[a:b] for full, spans in all_spans for a, b, _ in spans]
        encoded = iter(self._encode(texts, tokenizer))
        out = []
        for record, (_, spans) in zip(records, all_spans):
            ids, mask = [], []
            for _, _, loss in spans:
                piece = next(encoded)
                ids += piece
                mask += [loss] * len(piece)
            _check_mask(record, mask)
            out.append((ids, mask))
        return out

    def render(self, record: dict, tokenizer) -> tuple[list[int], list[int]]:
        """Token ids and loss mask of one record."""
        return self.render_batch([record], tokenizer)[0]

    def prompt(self, turns: Sequence[dict], tokenizer) -> list[int]:
        """Ids of the conversation plus the template's generation prompt, cut where `render` cuts."""
        messages = self._messages(turns)
        text = self._apply(tokenizer, messages, True, "<prompt>")
        cuts = [0]
        for i, turn in enumerate(turns):
            if turn["role"] != "assistant":
                continue
            before = self._apply(tokenizer, messages[:i], True, "<prompt>")
            upto = self._apply(tokenizer, messages[:i + 1], False, "<prompt>")
            end = len(upto.rstrip())
            if upto.startswith(before) and text.startswith(upto) and end > len(before):
                cuts += [len(before), end]
        cuts.append(len(text))
        pieces = [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
        return [tid for piece in self._encode(pieces, tokenizer) for tid in piece]


TEMPLATES = {"paper": PaperTemplate, "chatml": ChatMLTemplate, "tokenizer": TokenizerTemplate}


def get_template(name: str):
    """The template called `name` (paper | chatml | tokenizer)."""
    try:
        return TEMPLATES[name]()
    except KeyError:
        raise ValueError(f"unknown chat template {name!r} (expected one of {', '.join(TEMPLATES)})") from None


_APPROX = re.compile(r"\w+|[^\w\s]")


def approx_token_count(text: str) -> int:
    """A fast tokenizer-free estimate: words and punctuation marks (explicit option only)."""
    return len(_APPROX.findall(text))
