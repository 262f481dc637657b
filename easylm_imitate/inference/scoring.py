"""Log-probabilities of given token sequences, batched: what loglikelihood evaluations and
the completions endpoint's `echo` + `logprobs` need."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from easylm_imitate.inference.runtime import CompileLog, ModelRuntime, bucket

MAX_TOP = 20
log = logging.getLogger(__name__)


@dataclasses.dataclass
class SequenceScores:
    """Per-token scores of one sequence; entry i scores token i + 1 given tokens 0..i.

    logprobs [T-1]; greedy [T-1] (the token is the argmax); top_ids / top_logprobs [T-1, k]
    the k most likely tokens at each position (k = the `top` asked for, may be 0).
    """

    logprobs: np.ndarray
    greedy: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray


class Scorer:
    """Teacher-forced scoring of token sequences with a model, optionally on a mesh.

    Sequences are right-padded into buckets (powers of two) and split into forward passes of
    at most `max_batch_tokens` padded tokens, so the [batch, length, vocab] logits stay bounded.
    """

    def __init__(self, model: nnx.Module | ModelRuntime, mesh: Mesh | None = None, *,
                 max_batch_tokens: int = 4096, min_length_bucket: int = 16):
        self.runtime = ModelRuntime.of(model, mesh)
        self.max_batch_tokens = max_batch_tokens
        self.min_length_bucket = min_length_bucket
        self.compiles = CompileLog(log)
        self._score = jax.jit(self._score_impl, static_argnames=("top",))

    @property
    def traces(self) -> int:
        """How many times the scoring step was traced (compiled) so far."""
        return self.compiles.count

    def _score_impl(self, params, tokens, lengths, *, top: int):
        self.compiles.traced()
        width = tokens.shape[1]
        cols = jnp.arange(width, dtype=jnp.int32)[None, :]
        segments = (cols < lengths[:, None]).astype(jnp.int32)
        positions = jnp.broadcast_to(cols, tokens.shape)
        logits = self.runtime.model(params)(tokens, positions, segments)[:, :-1]
        logp = jax.nn.log_softmax(logits, axis=-1)
        target = tokens[:, 1:]
        token_lp = jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
        greedy = jnp.argmax(logits, axis=-1) == target
        top_lp, top_ids = jax.lax.top_k(logp, max(top, 1))
        return token_lp, greedy, top_ids[..., :top], top_lp[..., :top]

    def score(self, sequences: Sequence[Sequence[int]], top: int = 0) -> list[SequenceScores]:
        """Scores of each token sequence (each needs at least one token) under the model."""
        if not 0 <= top <= MAX_TOP:
            raise ValueError(f"top must be in [0, {MAX_TOP}], got {top}")
        if any(len(s) == 0 for s in sequences):
            raise ValueError("every sequence needs at least one token")
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        results: list[SequenceScores | None] = [None] * len(sequences)
        start = 0
        while start < len(order):
            width = bucket(len(sequences[order[start]]), self.min_length_bucket)
            rows = 1
            while start + rows < len(order):
                w = bucket(len(sequences[order[start + rows]]), self.min_length_bucket)
                if self.runtime.batch_bucket(rows + 1) * w > self.max_batch_tokens:
                    break
                width, rows = w, rows + 1
            group = order[start:start + rows]
            for i, scores in zip(group, self._score_group([sequences[i] for i in group], width, top)):
                results[i] = scores
            start += rows
        return results

    def _score_group(self, seqs, width: int, top: int) -> list[SequenceScores]:
        batch = self.runtime.batch_bucket(len(seqs))
        tokens = np.zeros((batch, width), np.int32)
        lengths = np.zeros((batch,), np.int32)
        for i, s in enumerate(seqs):
            tokens[i, :len(s)] = s
            lengths[i] = len(s)
        with self.runtime.active():
            out = self.compiles.call(f"scoring (batch {batch}, {width} tokens, top {top})", self._score,
                                     self.runtime.params, self.runtime.put(tokens), self.runtime.put(lengths), top=top)
            lp, greedy, top_ids, top_lp = jax.device_get(out)
        return [SequenceScores(logprobs=lp[i, :n - 1], greedy=greedy[i, :n - 1], top_ids=top_ids[i, :n - 1],
                               top_logprobs=top_lp[i, :n - 1]) for i, n in enumerate(lengths[:len(seqs)])]

    def loglikelihood(self, contexts: Sequence[Sequence[int]],
                      continuations: Sequence[Sequence[int]]) -> list[tuple[float, bool]]:
        """For each (context, continuation) pair of token lists: summed log-prob of the
        continuation given the context, and whether every continuation token is the argmax."""
        pairs = list(zip(contexts, continuations, strict=True))
        for ctx, cont in pairs:
            if not ctx or not cont:
                raise ValueError("loglikelihood needs a non-empty context and continuation")
        scores = self.score([list(c) + list(x) for c, x in pairs])
        out = []
        for (_, cont), s in zip(pairs, scores):
            n = len(cont)
            out.append((float(np.sum(s.logprobs[-n:], dtype=np.float64)), bool(np.all(s.greedy[-n:]))))
        return out
