"""Prompt size before tokenisation: a text prompt with more UTF-8 bytes than the token limit
times the longest token's bytes cannot fit, so the server refuses it by its byte count
instead of spending seconds per megabyte tokenising it."""

from __future__ import annotations

from collections.abc import Iterable


def longest_token_bytes(tokenizer) -> int:
    """UTF-8 length of the longest string in the tokenizer's vocabulary (added tokens included).

    No token covers more bytes of input text than this for byte-level BPE (GPT-2, LLaMA 3,
    SmolLM2) and SentencePiece with byte fallback (LLaMA 1/2), whose vocabulary strings are at
    least as long as the text they stand for.
    """
    return max((len(token.encode("utf-8", "surrogatepass")) for token in tokenizer.get_vocab()), default=1)


def prompt_byte_limit(max_prompt_tokens: int, tokenizer) -> int:
    """Most UTF-8 bytes a prompt of at most `max_prompt_tokens` tokens can have."""
    return max_prompt_tokens * max(1, longest_token_bytes(tokenizer))


def utf8_size(texts: Iterable[str]) -> int:
    """Total UTF-8 bytes of `texts` (a lone surrogate counts its 3 bytes rather than failing)."""
    return sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
