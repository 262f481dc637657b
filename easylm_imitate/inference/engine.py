"""Text in, text out: a model, its tokenizer, a sampler and a scorer behind one object.

The server and the evaluation backend both speak to models through an `Engine`: it renders
chat templates, applies stop strings (host side, between decode chunks), streams text
deltas, and maps prompt tokens back to character offsets for OpenAI-style echo logprobs.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence

from flax import nnx
from jax.sharding import Mesh

from easylm_imitate.inference.runtime import ModelRuntime
from easylm_imitate.inference.sampler import Sampler
from easylm_imitate.inference.sampling import SamplingParams
from easylm_imitate.inference.scoring import Scorer, SequenceScores

# Tokens that end an assistant turn in common chat templates (used when present in the vocab).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<end_of_turn>", "<|end|>")


@dataclasses.dataclass
class GenRequest:
    """One row to generate: prompt ids, sampling parameters, stop strings, optional stream,
    and an optional `cancel` event: once set, the row stops at the next decode chunk."""

    prompt_ids: list[int]
    params: SamplingParams
    stop: list[str] = dataclasses.field(default_factory=list)
    on_text: Callable[[str], None] | None = None  # receives text deltas as they are final
    cancel: threading.Event | None = None

    def cancelled(self) -> bool:
        """Whether the row's `cancel` event is set."""
        return self.cancel is not None and self.cancel.is_set()


@dataclasses.dataclass
class GenResult:
    """Generated text (cut before any stop string), its token ids and the finish reason.

    `end_token` is the end-of-sequence id generated last, when generation ended with one:
    it is in neither `text` nor `token_ids`, but it was generated, so it counts as a
    completion token and has a log-probability (OpenAI and vLLM report it).
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    end_token: int | None = None

    @property
    def generated_ids(self) -> list[int]:
        """Every generated token id: `token_ids` plus the end-of-sequence token, if any."""
        return self.token_ids + ([self.end_token] if self.end_token is not None else [])


def first_stop(text: str, stop: Sequence[str]) -> int:
    """Index of the earliest stop string in `text`, or -1."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else -1


class Engine:
    """Generation and scoring over text for one model and its Hugging Face tokenizer."""

    def __init__(self, model: nnx.Module, tokenizer, mesh: Mesh | None = None, *, chunk: int = 16,
                 max_batch_tokens: int = 4096):
        if tokenizer is None:
            raise ValueError("the checkpoint has no tokenizer/ directory; the engine needs one")
        self.cfg = model.cfg
        self.tokenizer = tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        runtime = ModelRuntime(model, mesh)  # one copy of the weights for both
        self.sampler = Sampler(runtime, chunk=chunk, pad_id=pad)
        self.scorer = Scorer(runtime, max_batch_tokens=max_batch_tokens)
        self.eos_ids = self._eos_ids()

    @property
    def context_length(self) -> int:
        """Longest prompt plus generation the model's positions allow."""
        return self.cfg.max_position_embeddings

    def _eos_ids(self) -> list[int]:
        ids = [self.tokenizer.eos_token_id]
        vocab = self.tokenizer.get_vocab()
        ids += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]
        return [i for i in dict.fromkeys(ids) if i is not None][:8]

    # ---- tokens <-> text ----------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of a raw-text prompt (with the tokenizer's usual special tokens, e.g. BOS)."""
        return list(self.tokenizer(text)["input_ids"])

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation rendered by the tokenizer's chat template, ready for
        the assistant's reply."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, special tokens dropped."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        """The text of one token as logprobs report it (special tokens spelled out, e.g. `</s>`)."""
        return self.tokenizer.decode([int(token_id)])

    def text_pieces(self, text: str) -> tuple[list[int], list[str]]:
        """Token ids of `text` and the piece of text each token covers ("".join == text).

        Boundaries fall at token ends, so leading whitespace belongs to the token it starts
        (as in OpenAI's `tokens` / `text_offset`); added special tokens cover "".
        """
        enc = self.tokenizer(text, return_offsets_mapping=True)
        pieces, prev = [], 0
        for _, end in enc["offset_mapping"]:
            end = max(prev, end)
            pieces.append(text[prev:end])
            prev = end
        if pieces:
            pieces[-1] += text[prev:]
        return list(enc["input_ids"]), pieces

    def id_pieces(self, ids: Sequence[int], prefix: Sequence[int] = ()) -> list[str]:
        """The text each of `ids` adds when decoded after `prefix` (joins to their text)."""
        out, ctx = [], list(prefix)
        before = self.decode(ctx)
        for i in ids:
            ctx.append(i)
            now = self.decode(ctx)
            out.append(now[len(before):] if now.startswith(before) else self.decode([i]))
            before = now
        return out

    # ---- generation ---------------------------------------------------------------------
    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        """Generate every request as one batch; stop strings and streaming are honoured."""
        requests = list(requests)
        if not requests:
            return []
        sent = [0] * len(requests)
        watch_rows = any(r.stop or r.cancel is not None for r in requests)
        watch_stream = any(r.on_text for r in requests)

        def visible(i: int, tokens: list[int], final: bool) -> str:
            text = self.decode(tokens)
            cut = first_stop(text, requests[i].stop)
            if cut >= 0:
                return text[:cut]
            if final:
                return text
            hold = max((len(s) for s in requests[i].stop), default=1) - 1
            text = text[:len(text) - hold] if hold else text
            return text.rstrip("\ufffd")

        def stream(i: int, text: str) -> None:
            if requests[i].on_text and len(text) > sent[i]:
                requests[i].on_text(text[sent[i]:])
                sent[i] = len(text)

        def on_progress(tokens: list[list[int]]) -> None:
            for i, toks in enumerate(tokens):
                if requests[i].on_text:
                    stream(i, visible(i, toks, final=False))

        def stop_check(i: int, tokens: list[int]) -> bool:
            if requests[i].cancelled():
                return True
            return bool(requests[i].stop) and first_stop(self.decode(tokens), requests[i].stop) >= 0

        gens = self.sampler.generate([r.prompt_ids for r in requests], [r.params for r in requests],
                                     eos_ids=self.eos_ids, stop_check=stop_check if watch_rows else None,
                                     on_progress=on_progress if watch_stream else None)
        results = []
        for i, g in enumerate(gens):
            full = self.decode(g.tokens)
            text = visible(i, g.tokens, final=True)
            tokens, reason, end = g.tokens, g.finish_reason, g.end_token
            if len(text) < len(full):
                reason, tokens, end = "stop", self._covering_prefix(g.tokens, len(text)), None
            stream(i, text)
            results.append(GenResult(text=text, token_ids=tokens, finish_reason=reason, end_token=end))
        return results

    def warmup(self, rows: Sequence[int], prompt_tokens: Sequence[int], max_tokens: Sequence[int],
               params: SamplingParams | None = None) -> list[tuple[int, int, int]]:
        """Compile generation ahead of requests, for every combination of batch rows, prompt
        length and max new tokens (greedy unless `params` says otherwise); returns the
        compiled (batch, prompt, new tokens) buckets, each once, in order."""
        params = params or SamplingParams()
        shapes = sorted({self.sampler.shape(r, p, m) for r in rows for p in prompt_tokens for m in max_tokens})
        for batch, width, new_len in shapes:
            self.sampler.warmup(batch, width, dataclasses.replace(params, max_new_tokens=new_len), self.eos_ids)
        return shapes

    def _covering_prefix(self, tokens: list[int], chars: int) -> list[int]:
        """The shortest prefix of `tokens` whose text has at least `chars` characters."""
        for k in range(len(tokens) + 1):
            if len(self.decode(tokens[:k])) >= chars:
                return tokens[:k]
        return tokens

    # ---- scoring ------------------------------------------------------------------------
    def score(self, sequences: Sequence[Sequence[int]], top: int = 0) -> list[SequenceScores]:
        """Per-token log-probs of token sequences (see `Scorer.score`)."""
        return self.scorer.score(sequences, top)

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(sum log-prob, is greedy) of each continuation given its context, on text.

        The context is encoded alone and the continuation's tokens are those the full text
        adds after it (lm-evaluation-harness's convention, which moves trailing spaces of
        the context onto the continuation).
        """
        contexts, continuations = [], []
        for ctx, cont in pairs:
            n_space = len(ctx) - len(ctx.rstrip(" "))
            if n_space:
                ctx, cont = ctx[:-n_space], ctx[-n_space:] + cont
            whole = self.encode(ctx + cont)
            k = len(self.encode(ctx)) if ctx else 0
            if k == 0:  # empty context: condition on the end-of-sequence token, as lm-eval does
                whole, k = [self.eos_ids[0]] + whole, 1
            contexts.append(whole[:k])
            continuations.append(whole[k:])
        return self.scorer.loglikelihood(contexts, continuations)
