"""Model backends the evaluations talk to: any OpenAI-compatible endpoint, or a checkpoint.

Every evaluation is written against the `LMBackend` protocol, so the target model behind an
API and our own checkpoints are measured by exactly the same code.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class LMBackend(Protocol):
    """What an evaluation needs from a model."""

    name: str

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """For each (context, continuation): summed log-prob of the continuation given the
        context, and whether the continuation is the greedy one."""

    def generate(self, prompts: list[str], *, max_new_tokens: int, stop: list[str],
                 temperature: float = 0.0, n: int = 1, seed: int = 0) -> list[list[str]]:
        """For each prompt, `n` raw-text continuations cut before the first stop string."""

    def chat(self, conversations: list[list[dict]], *, max_new_tokens: int,
             temperature: float = 0.0, n: int = 1) -> list[list[str]]:
        """For each conversation (OpenAI-style message dicts), `n` assistant replies."""


def truncate_at_stop(text: str, stop: list[str]) -> str:
    """Cut `text` before the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def continuation_logprob(logprobs: Any, context_chars: int) -> tuple[float, bool]:
    """Sum the echoed prompt log-probs of the tokens that hold the continuation.

    `logprobs` is a completions `logprobs` object (tokens, token_logprobs, top_logprobs,
    text_offset). A token belongs to the continuation when it ends after the context's last
    character (as lm-evaluation-harness does with token offsets); a token straddling the
    boundary is counted with the continuation. Greedy means every such token is the top-1.
    """
    get = (lambda k: logprobs[k]) if isinstance(logprobs, dict) else (lambda k: getattr(logprobs, k))
    tokens, token_lps, offsets = get("tokens"), get("token_logprobs"), get("text_offset")
    tops = get("top_logprobs")
    if not tokens or offsets is None or token_lps is None:
        raise ValueError("endpoint returned no prompt logprobs (does it support echo with max_tokens=0?)")
    start = None
    for i, (tok, off) in enumerate(zip(tokens, offsets)):
        if off + len(tok) > context_chars:
            start = i
            break
    if start is None:
        raise ValueError("continuation is empty or was not echoed back")
    if start == 0:
        raise ValueError("context is empty: the first token has no log-prob")
    total, greedy = 0.0, True
    for i in range(start, len(tokens)):
        lp = token_lps[i]
        if lp is None:
            raise ValueError(f"token {i} has no log-prob")
        total += float(lp)
        top = tops[i] if tops else None
        if top:
            best = max(top.values())
            if lp < best - 1e-9:
                greedy = False
    return total, greedy


class EndpointBackend:
    """An `LMBackend` over any OpenAI-compatible server, through the official `openai` client.

    loglikelihood uses /v1/completions with echo=True, logprobs=1, max_tokens=0; generate uses
    /v1/completions; chat uses /v1/chat/completions.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 batch_size: int = 8, max_in_flight: int = 4, timeout: float = 120.0,
                 max_retries: int = 4, name: str | None = None):
        import openai

        self.model = model
        self.name = name or model
        self.batch_size = max(1, batch_size)
        self.max_in_flight = max(1, max_in_flight)
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY",
                                     timeout=timeout, max_retries=max_retries)

    def _map(self, fn, items: list) -> list:
        batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        with ThreadPoolExecutor(self.max_in_flight) as pool:
            return [y for ys in pool.map(fn, batches) for y in ys]

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """See `LMBackend.loglikelihood`."""
        def run(batch):
            resp = self._client.completions.create(
                model=self.model, prompt=[c + x for c, x in batch], echo=True, logprobs=1,
                max_tokens=0, temperature=0.0)
            choices = sorted(resp.choices, key=lambda ch: ch.index)
            return [continuation_logprob(ch.logprobs, len(c)) for ch, (c, _) in zip(choices, batch)]
        return self._map(run, list(requests))

    def generate(self, prompts: list[str], *, max_new_tokens: int, stop: list[str],
                 temperature: float = 0.0, n: int = 1, seed: int = 0) -> list[list[str]]:
        """See `LMBackend.generate`; stop strings are also applied on our side."""
        def run(batch):
            resp = self._client.completions.create(
                model=self.model, prompt=batch, max_tokens=max_new_tokens, stop=stop or None,
                temperature=temperature, n=n, seed=seed)
            choices = sorted(resp.choices, key=lambda ch: ch.index)
            texts = [truncate_at_stop(ch.text or "", stop) for ch in choices]
            return [texts[i * n:(i + 1) * n] for i in range(len(batch))]
        return self._map(run, list(prompts))

    def chat(self, conversations: list[list[dict]], *, max_new_tokens: int,
             temperature: float = 0.0, n: int = 1) -> list[list[str]]:
        """See `LMBackend.chat` (one request per conversation)."""
        def run(batch):
            out = []
            for messages in batch:
                resp = self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_new_tokens,
                    temperature=temperature, n=n)
                out.append([ch.message.content or "" for ch in sorted(resp.choices, key=lambda c: c.index)])
            return out
        return self._map(run, list(conversations))


def make_backend(flags: Any) -> LMBackend:
    """Build the backend the flags ask for: --checkpoint=DIR, or --endpoint=URL --endpoint_model=NAME."""
    checkpoint = getattr(flags, "checkpoint", None)
    endpoint = getattr(flags, "endpoint", None)
    name = getattr(flags, "model_name", None)
    if checkpoint and endpoint:
        raise ValueError("pass either --checkpoint or --endpoint, not both")
    if checkpoint:
        from easylm_imitate.evaluation.checkpoint_backend import CheckpointBackend

        backend = CheckpointBackend(checkpoint)
        if name:
            backend.name = name
        return backend
    if endpoint:
        model = getattr(flags, "endpoint_model", None)
        if not model:
            raise ValueError("--endpoint needs --endpoint_model")
        key_env = getattr(flags, "api_key_env", None)
        api_key = os.environ.get(key_env) if key_env else None
        return EndpointBackend(endpoint, model, api_key, name=name,
                               batch_size=getattr(flags, "batch_size", 8) or 8)
    raise ValueError("no model to evaluate: pass --endpoint=URL --endpoint_model=NAME or --checkpoint=DIR")
