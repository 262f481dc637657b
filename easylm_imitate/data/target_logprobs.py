"""The target's per-token log-probabilities, carried in canonical records for distillation.

A record may hold `meta["target_logprobs"]`: one entry per assistant turn, in turn order.
An entry is the OpenAI chat `choices[0].logprobs.content` list of that reply::

    [{"token": str, "logprob": float, "bytes": [int, ...] | null,
      "top_logprobs": [{"token": str, "logprob": float, "bytes": [...] | null}, ...]}, ...]

or null (no log-probs for that turn). `align` maps them onto the student's rendered tokens:
each token is looked up in the student's vocabulary by its bytes (its text when `bytes` is
absent), and the target's tokens must reproduce the student's tokens of the turn's loss
span (the turn's end token may be missing, as OpenAI leaves it out). A token the student's
vocabulary does not have means another tokenizer: `TokenizerMismatch`, an error for the
whole run. Tokens that all exist but split the text differently: `AlignmentError`, the
record is rejected. The build helpers (`select_turns`, `after_cleaning`) keep the entries in
step with the turns when the build splits or cleans a conversation.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Sequence

import numpy as np

KEY = "target_logprobs"
_REPLACEMENT = "\ufffd".encode("utf-8")  # a server decoding part of a UTF-8 character shows this


class TokenizerMismatch(ValueError):
    """The target's tokens are not tokens of the student's tokenizer (distillation needs one)."""


class AlignmentError(ValueError):
    """A record whose target tokens do not reproduce the student's tokens (the record is rejected)."""


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the character standing for each byte, inverted."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class TokenMap:
    """The student's vocabulary as bytes: `id_of(bytes)` and `bytes_of(id)`."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        vocab = tokenizer.get_vocab()
        special = set(getattr(tokenizer, "all_special_tokens", [])) | set(getattr(tokenizer, "added_tokens_encoder", {}))
        probe = tokenizer.convert_ids_to_tokens(tokenizer.encode(" x", add_special_tokens=False))
        first = probe[0] if probe else ""
        self._style = "bytelevel" if first.startswith("Ġ") else "sentencepiece" if first.startswith("▁") else "plain"
        self._bytes: dict[int, bytes] = {}
        self._ids: dict[bytes, int] = {}
        # Ordinary tokens win over special ones spelling the same bytes; lower ids win ties.
        for token, tid in sorted(vocab.items(), key=lambda kv: (kv[0] in special, kv[1])):
            b = token.encode("utf-8") if token in special else self._token_bytes(token)
            self._bytes[tid] = b
            self._ids.setdefault(b, tid)

    def _token_bytes(self, token: str) -> bytes:
        if self._style == "bytelevel":
            dec = _byte_decoder()
            if all(c in dec for c in token):
                return bytes(dec[c] for c in token)
        elif self._style == "sentencepiece":
            m = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", token)
            if m:
                return bytes([int(m.group(1), 16)])
            return token.replace("▁", " ").encode("utf-8")
        return token.encode("utf-8")

    def id_of(self, b: bytes) -> int | None:
        """The id of the token spelling `b`, or None."""
        return self._ids.get(b)

    def bytes_of(self, tid: int) -> bytes:
        """The bytes token `tid` stands for."""
        return self._bytes.get(int(tid), b"")

    def text_of(self, tid: int) -> str:
        """The token's text as a server decodes it alone (what `token` holds without `bytes`)."""
        return self.tokenizer.decode([int(tid)])


_MAPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def token_map(tokenizer) -> TokenMap:
    """The (cached) TokenMap of a tokenizer."""
    try:
        return _MAPS[tokenizer]
    except (KeyError, TypeError):
        pass
    out = TokenMap(tokenizer)
    try:
        _MAPS[tokenizer] = out
    except TypeError:
        pass
    return out


def _entry_bytes(entry: dict, where: str) -> bytes:
    """The bytes of one logprobs entry (`bytes` when given, else the UTF-8 of `token`)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
        raise AlignmentError(f"{where}: expected an object with a string 'token'")
    raw = entry.get("bytes")
    if raw is None:
        return entry["token"].encode("utf-8")
    if not isinstance(raw, list) or not all(isinstance(x, int) and 0 <= x < 256 for x in raw):
        raise AlignmentError(f"{where}.bytes: expected a list of byte values (0-255) or null")
    return bytes(raw)


def _logprob(entry: dict, where: str) -> float:
    value = entry.get("logprob")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise AlignmentError(f"{where}.logprob: expected a finite number, got {value!r}")
    return float(value)


def loss_runs(mask: Sequence[int]) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of loss-mask ones: one per assistant turn."""
    runs, start = [], None
    for i, m in enumerate(list(mask) + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def entries_of(record: dict) -> list | None:
    """The record's `meta.target_logprobs` (checked to be one entry per assistant turn), or None."""
    meta = record.get("meta") or {}
    if KEY not in meta or meta[KEY] is None:
        return None
    entries = meta[KEY]
    assistants = sum(1 for t in record["turns"] if t["role"] == "assistant")
    if not isinstance(entries, list) or len(entries) != assistants:
        got = f"{len(entries)} entries" if isinstance(entries, list) else type(entries).__name__
        raise AlignmentError(f"meta.{KEY}: expected a list with one entry per assistant turn "
                             f"({assistants}), got {got}")
    return entries


def align(record: dict, ids: Sequence[int], mask: Sequence[int], tokenizer, top_k: int):
    """Per-token target distributions of a rendered record: (top_ids [L, K] int32,
    top_logprobs [L, K] float32, slot_mask [L, K] float32), K = `top_k`; row i is the
    target's top-K at the position that produced token i (slot_mask 0 where there is none).

    TokenizerMismatch if a target token is not in the student's vocabulary; AlignmentError
    if the record's target tokens do not reproduce its rendered assistant tokens.
    """
    n = len(ids)
    top_ids = np.zeros((n, top_k), np.int32)
    top_lp = np.zeros((n, top_k), np.float32)
    slots = np.zeros((n, top_k), np.float32)
    entries = entries_of(record)
    if entries is None:
        return top_ids, top_lp, slots
    rid = record.get("id", "<no id>")
    runs = loss_runs(mask)
    if len(runs) != len(entries):
        raise AlignmentError(f"the template gives {len(runs)} loss spans for {len(entries)} assistant turns")
    tmap = token_map(tokenizer)
    for turn, ((start, end), content) in enumerate(zip(runs, entries)):
        if content is None:
            continue
        where = f"meta.{KEY}[{turn}]"
        if not isinstance(content, list):
            raise AlignmentError(f"{where}: expected the logprobs 'content' list or null")
        student = list(ids[start:end])
        chosen = [_entry_bytes(entry, f"{where}[{j}]") for j, entry in enumerate(content)]
        for j, (entry, b) in enumerate(zip(content, chosen)):  # another tokenizer is told first
            _check_maps(tmap, b, entry, rid, turn, j)
        if not (len(student) - 1 <= len(content) <= len(student)):
            raise AlignmentError(f"{where}: {len(content)} target tokens for the {len(student)} tokens the student's "
                                 "tokenizer gives this reply (the reply was tokenized differently)")
        for j, (entry, b) in enumerate(zip(content, chosen)):
            here = f"{where}[{j}]"
            if b != tmap.bytes_of(student[j]) and entry["token"] != tmap.text_of(student[j]):
                raise AlignmentError(f"{here}: target token {entry['token']!r} is not the student's token "
                                     f"{tmap.text_of(student[j])!r} at this place (the reply was tokenized "
                                     "differently: is the template the one the target was served with?)")
            tops = entry.get("top_logprobs") or []
            if not isinstance(tops, list):
                raise AlignmentError(f"{here}.top_logprobs: expected a list")
            tops = sorted(((_logprob(t, f"{here}.top_logprobs[{k}]"), k, t) for k, t in enumerate(tops)),
                          key=lambda x: (-x[0], x[1]))
            seen, slot = set(), 0
            for lp, k, alt in tops:
                if slot >= top_k:
                    break
                ab = _entry_bytes(alt, f"{here}.top_logprobs[{k}]")
                tid = _check_maps(tmap, ab, alt, rid, turn, j)
                if tid is None or tid in seen:
                    continue
                seen.add(tid)
                top_ids[start + j, slot], top_lp[start + j, slot], slots[start + j, slot] = tid, lp, 1.0
                slot += 1
    return top_ids, top_lp, slots


def _check_maps(tmap: TokenMap, b: bytes, entry: dict, rid, turn: int, position: int) -> int | None:
    """The student id of a target token; None for a server's stand-in for part of a UTF-8
    character (U+FFFD) that the vocabulary does not spell; TokenizerMismatch otherwise."""
    tid = tmap.id_of(b)
    if tid is None and _REPLACEMENT not in b:
        raise TokenizerMismatch(
            f"record {rid!r}: target token {entry['token']!r} (assistant turn {turn}, token {position}) is not a token "
            f"of the student's tokenizer {tmap.name}; distillation needs the target to use the student's tokenizer")
    return tid


def select_turns(turns: Sequence[dict], indices: Sequence[int], entries: list | None) -> list | None:
    """The entries of the assistant turns among `turns[indices]` (a build piece), or None."""
    if entries is None:
        return None
    position = {i: k for k, i in enumerate(i for i, t in enumerate(turns) if t["role"] == "assistant")}
    return [entries[position[i]] for i in indices if i in position]


def after_cleaning(old_turns: Sequence[dict], new_turns: Sequence[dict], entries: list | None) -> list | None:
    """Entries for the cleaned turns: a reply kept word for word keeps its entry, a changed
    (cleaned or joined) one gets null (its tokens are no longer the target's)."""
    if entries is None:
        return None
    old = [(t["text"], e) for t, e in zip((t for t in old_turns if t["role"] == "assistant"), entries)]
    out, k = [], 0
    for turn in new_turns:
        if turn["role"] != "assistant":
            continue
        found = None
        for j in range(k, len(old)):
            if old[j][0] == turn["text"]:
                found, k = old[j][1], j + 1
                break
        out.append(found)
    return out
