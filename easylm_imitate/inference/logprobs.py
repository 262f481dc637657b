"""OpenAI `logprobs` objects from scored tokens: the legacy completions form (`tokens`,
`token_logprobs`, `top_logprobs`, `text_offset`) and the chat form (`content`).

Both cover every generated token, including an end-of-sequence token that ended the
generation (as OpenAI and vLLM report it, and as lm-evaluation-harness relies on: it reads
the prompt's log-probs as `token_logprobs[ctxlen:-1]`, assuming one generated token follows).
That token's text (e.g. `</s>`) appears in `tokens` but not in the completion's `text`, so
its `text_offset` is the end of the text.
"""

from __future__ import annotations

import dataclasses

from easylm_imitate.inference.engine import Engine, GenResult
from easylm_imitate.inference.scoring import SequenceScores


@dataclasses.dataclass
class TokenLogprob:
    """One token as OpenAI reports it: its text, log-prob (None for the very first token of
    a sequence) and the most likely alternatives at its position."""

    text: str
    logprob: float | None
    top: list[tuple[str, float]] | None
    in_text: bool = True  # False for an end-of-sequence token: its text is not in the output


def token_logprobs(engine: Engine, prompt_ids: list[int], prompt_pieces: list[str] | None, result: GenResult,
                   scores: SequenceScores, echo: bool) -> list[TokenLogprob]:
    """Per-token log-probs of the generated tokens (the prompt's first when `echo`).

    `scores` must score `prompt_ids + result.generated_ids`; `prompt_pieces` (needed only
    with `echo`) is the text each prompt token covers.
    """
    n_prompt = len(prompt_ids)
    pieces = list(prompt_pieces) if echo else [""] * n_prompt
    pieces += engine.id_pieces(result.token_ids, prefix=prompt_ids)
    in_text = [True] * len(pieces)
    if result.end_token is not None:
        pieces.append(engine.token_text(result.end_token))
        in_text.append(False)
    expected = n_prompt + len(result.generated_ids) - 1
    if len(scores.logprobs) != expected:
        raise ValueError(f"scores cover {len(scores.logprobs) + 1} tokens, expected {expected + 1}")
    out = []
    for t in range(0 if echo else n_prompt, len(pieces)):
        if t == 0:
            out.append(TokenLogprob(pieces[0], None, None))
            continue
        top = [(engine.token_text(int(i)), float(lp))
               for i, lp in zip(scores.top_ids[t - 1], scores.top_logprobs[t - 1])]
        out.append(TokenLogprob(pieces[t], float(scores.logprobs[t - 1]), top, in_text[t]))
    return out


def completion_logprobs(tokens: list[TokenLogprob]) -> dict:
    """The legacy completions `logprobs` object (`top_logprobs` maps token text to log-prob,
    the first of equal texts kept)."""
    offsets, offset = [], 0
    for tok in tokens:
        offsets.append(offset)
        offset += len(tok.text) if tok.in_text else 0
    tops = [None if tok.top is None else _first_of_each(tok.top) for tok in tokens]
    return {"tokens": [tok.text for tok in tokens], "token_logprobs": [tok.logprob for tok in tokens],
            "top_logprobs": tops, "text_offset": offsets}


def chat_logprobs(tokens: list[TokenLogprob]) -> dict:
    """The chat completions `logprobs` object: `{"content": [{token, logprob, bytes,
    top_logprobs}]}`."""
    def entry(text: str, lp: float) -> dict:
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**entry(tok.text, tok.logprob), "top_logprobs": [entry(t, lp) for t, lp in tok.top or []]}
                        for tok in tokens], "refusal": None}


def _first_of_each(pairs: list[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for text, lp in pairs:
        out.setdefault(text, lp)
    return out
