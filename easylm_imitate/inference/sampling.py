"""Per-request sampling parameters and the on-device choice of the next token."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How one row is decoded. temperature 0 is greedy; top_k 0 and top_p 1 switch those off."""

    max_new_tokens: int = 16
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        """Whether this row always takes the most likely token."""
        return self.temperature == 0.0

    @property
    def filtered(self) -> bool:
        """Whether top-k or top-p truncation applies."""
        return not self.greedy and (self.top_k > 0 or self.top_p < 1.0)


def decode_mode(params: list[SamplingParams]) -> str:
    """The compiled variant a batch needs: 'greedy', 'sample' or 'filtered' (top-k/top-p)."""
    if all(p.greedy for p in params):
        return "greedy"
    return "filtered" if any(p.filtered for p in params) else "sample"


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """Mask logits [B, V] outside each row's top-k, then outside its top-p nucleus.

    top_k [B] int (0 = off), top_p [B] float (1 = off). As in Hugging Face: top-k first, then
    the smallest set of the remaining tokens whose probability reaches top_p (at least one).
    """
    vocab = logits.shape[-1]
    desc = -jnp.sort(-logits, axis=-1)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    rank = jnp.arange(vocab)[None, :]
    desc = jnp.where(rank < k[:, None], desc, NEG_INF)
    probs = jax.nn.softmax(desc, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    kept = (before < top_p[:, None]) & (rank < k[:, None])
    kept = kept.at[:, 0].set(True)
    count = jnp.sum(kept, axis=-1)
    threshold = jnp.take_along_axis(desc, (count - 1)[:, None], axis=-1)
    return jnp.where(logits >= threshold, logits, NEG_INF)


def next_token(logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_k: jax.Array,
               top_p: jax.Array, mode: str) -> jax.Array:
    """Choose the next token [B] from float32 logits [B, V] with per-row keys and parameters.

    Rows with temperature 0 take the argmax whatever the mode; `mode` (static) only decides
    how much work the compiled step does.
    """
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if mode == "greedy":
        return greedy
    scaled = logits / jnp.maximum(temperature, 1e-6)[:, None]
    if mode == "filtered":
        scaled = filter_logits(scaled, top_k, top_p)
    sampled = jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)
    return jnp.where(temperature > 0, sampled, greedy)
