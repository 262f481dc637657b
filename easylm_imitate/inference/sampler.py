"""KV-cache generation: one jitted prefill, then an on-device decode loop (lax.while_loop).

Prompts of different lengths are left-padded into one batch (segment id 0 on the pads,
positions counting from 0 at each row's first real token). The prompt width, the number of
new tokens and the batch are rounded up to powers of two, so new lengths rarely recompile;
jit caches one executable per bucket (each new one is logged as it compiles; `warmup`
compiles one ahead). The host only looks at the tokens between chunks of decode steps, and
only when something (stop strings, streaming, cancellation) needs it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from easylm_imitate.inference.runtime import CompileLog, ModelRuntime, bucket
from easylm_imitate.inference.sampling import SamplingParams, decode_mode, next_token
from easylm_imitate.models import KVCache

MAX_EOS_IDS = 8
log = logging.getLogger(__name__)


@flax.struct.dataclass
class DecodeState:
    """Everything the decode loop carries (all on device)."""

    cache: KVCache
    tokens: jax.Array  # [B, G] generated ids (pad after a row ends)
    last: jax.Array  # [B] the token to feed next
    position: jax.Array  # [B] its position
    step: jax.Array  # [] tokens generated so far (all rows advance together)
    done: jax.Array  # [B]
    hit_eos: jax.Array  # [B]
    lengths: jax.Array  # [B] generated tokens before any end-of-sequence token
    keys: jax.Array  # [B, 2] per-row base PRNG keys
    max_new: jax.Array  # [B]
    temperature: jax.Array
    top_k: jax.Array
    top_p: jax.Array
    eos_ids: jax.Array  # [MAX_EOS_IDS], -1 = unused


@dataclasses.dataclass
class Generation:
    """One row's result: new token ids (no end-of-sequence token), why it ended, and the
    end-of-sequence id that ended it (None when it ended otherwise)."""

    tokens: list[int]
    finish_reason: str  # 'stop' (end-of-sequence or stop condition) or 'length'
    end_token: int | None = None


# (row, token ids so far) -> True when the row must stop now (e.g. a stop string appeared).
StopCheck = Callable[[int, list[int]], bool]


class Sampler:
    """Batched generation from a model, optionally sharded on a mesh.

    `chunk` is how many decode steps run on device between host checks when a stop check or
    a progress callback is given; without them the whole generation is one device call.
    """

    def __init__(self, model: nnx.Module | ModelRuntime, mesh: Mesh | None = None, *, chunk: int = 32,
                 min_prompt_bucket: int = 16, min_new_bucket: int = 16, pad_id: int = 0):
        self.runtime = ModelRuntime.of(model, mesh)
        self.cfg = model.cfg
        self.chunk = chunk
        self.min_prompt_bucket = min_prompt_bucket
        self.min_new_bucket = min_new_bucket
        self.pad_id = pad_id
        self.compiles = CompileLog(log)
        self._start = jax.jit(self._start_impl, static_argnames=("new_len", "mode"))
        self._decode = jax.jit(self._decode_impl, static_argnames=("mode",), donate_argnums=(1,))

    @property
    def traces(self) -> int:
        """How many times a step was traced (compiled) so far."""
        return self.compiles.count

    def shape(self, rows: int, prompt_len: int, max_new_tokens: int) -> tuple[int, int, int]:
        """The compiled (batch, prompt width, new tokens) buckets `rows` prompts of up to
        `prompt_len` tokens generating up to `max_new_tokens` run in."""
        return (self.runtime.batch_bucket(rows), bucket(prompt_len, self.min_prompt_bucket),
                bucket(max_new_tokens, self.min_new_bucket))

    # ---- device functions ---------------------------------------------------------------
    def _append(self, state: DecodeState, token: jax.Array) -> DecodeState:
        is_eos = jnp.any(token[:, None] == state.eos_ids[None, :], axis=-1)
        live = ~state.done
        tokens = jax.lax.dynamic_update_slice(
            state.tokens, jnp.where(live, token, self.pad_id)[:, None], (0, state.step))
        hit = state.hit_eos | (live & is_eos)
        done = state.done | hit | (state.step + 1 >= state.max_new)
        return state.replace(tokens=tokens, last=token, step=state.step + 1, done=done, hit_eos=hit,
                             lengths=state.lengths + (live & ~is_eos).astype(jnp.int32))

    def _choose(self, state: DecodeState, logits: jax.Array, mode: str) -> jax.Array:
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.keys, state.step)
        return next_token(logits, keys, state.temperature, state.top_k, state.top_p, mode)

    def _start_impl(self, params, prompt, prompt_len, max_new, temperature, top_k, top_p, seeds,
                    eos_ids, *, new_len: int, mode: str) -> DecodeState:
        self.compiles.traced()
        batch, width = prompt.shape
        pad = width - prompt_len
        cols = jnp.arange(width, dtype=jnp.int32)[None, :]
        positions = jnp.maximum(cols - pad[:, None], 0)
        segments = (cols >= pad[:, None]).astype(jnp.int32)
        cache = KVCache.create(self.cfg, batch, width + new_len, per_layer=self.runtime.per_layer)
        logits, cache = self.runtime.model(params)(prompt, positions, segments, cache)
        state = DecodeState(
            cache=cache, tokens=jnp.full((batch, new_len), self.pad_id, jnp.int32),
            last=prompt[:, -1], position=prompt_len, step=jnp.zeros((), jnp.int32),
            done=max_new <= 0, hit_eos=jnp.zeros((batch,), bool), lengths=jnp.zeros((batch,), jnp.int32),
            keys=jax.vmap(jax.random.PRNGKey)(seeds), max_new=max_new, temperature=temperature,
            top_k=top_k, top_p=top_p, eos_ids=eos_ids)
        return self._append(state, self._choose(state, logits[:, -1], mode))

    def _decode_impl(self, params, state: DecodeState, stop_at, force_done, *, mode: str) -> DecodeState:
        self.compiles.traced()
        model = self.runtime.model(params)
        stop_at = jnp.minimum(stop_at, state.tokens.shape[1])
        state = state.replace(done=state.done | force_done)

        def cond(s: DecodeState):
            return (s.step < stop_at) & ~jnp.all(s.done)

        def body(s: DecodeState):
            ones = jnp.ones_like(s.last)[:, None]
            logits, cache = model(s.last[:, None], s.position[:, None], ones, s.cache)
            s = s.replace(cache=cache, position=s.position + 1)
            return self._append(s, self._choose(s, logits[:, 0], mode))

        return jax.lax.while_loop(cond, body, state)

    # ---- host driver --------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams] | SamplingParams,
                 eos_ids: Sequence[int] = (), stop_check: StopCheck | None = None,
                 on_progress: Callable[[list[list[int]]], None] | None = None) -> list[Generation]:
        """Generate for each prompt (token ids) with its own sampling parameters.

        Stops a row at any of `eos_ids` (not in `tokens`; given as `end_token`), after its
        `max_new_tokens`, or when `stop_check(row, tokens)` says so (checked between chunks;
        the caller truncates). `on_progress(tokens_per_row)` is called after every chunk.
        """
        rows = len(prompts)
        if rows == 0:
            return []
        if isinstance(params, SamplingParams):
            params = [params] * rows
        if len(params) != rows:
            raise ValueError(f"{rows} prompts but {len(params)} sampling parameter sets")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        batch, width, new_len = self.shape(rows, max(len(p) for p in prompts), max(p.max_new_tokens for p in params))
        put = self.runtime.put
        with self.runtime.active():
            state, label, mode = self._begin(prompts, params, eos_ids, batch, width, new_len)
            watched = stop_check is not None or on_progress is not None
            stopped = np.zeros((batch,), bool)
            while True:
                if watched:
                    tokens, lengths, done, step = jax.device_get(
                        (state.tokens, state.lengths, state.done, state.step))
                    current = [tokens[i, :lengths[i]].tolist() for i in range(rows)]
                    if on_progress is not None:
                        on_progress(current)
                    if stop_check is not None:
                        for i in range(rows):
                            if not done[i] and not stopped[i] and stop_check(i, current[i]):
                                stopped[i] = True
                    if np.all(done | stopped) or int(step) >= new_len:
                        break
                    stop_at = min(int(step) + self.chunk, new_len)
                else:
                    if bool(jnp.all(state.done)) or int(state.step) >= new_len:
                        break
                    stop_at = new_len
                state = self.compiles.call(f"generation decode ({label})", self._decode, self.runtime.params,
                                           state, jnp.int32(stop_at), put(stopped), mode=mode)
            tokens, lengths, hit_eos = jax.device_get((state.tokens, state.lengths, state.hit_eos))
        return [Generation(tokens=tokens[i, :lengths[i]].tolist(),
                           finish_reason="stop" if (hit_eos[i] or stopped[i]) else "length",
                           end_token=int(tokens[i, lengths[i]]) if hit_eos[i] else None)
                for i in range(rows)]

    def warmup(self, batch: int, width: int, params: SamplingParams, eos_ids: Sequence[int] = ()) -> None:
        """Compile prefill and decode for `batch` rows of `width`-token prompts generating up
        to `params.max_new_tokens` (the shape's buckets): runs one prefill and no decode step."""
        batch, width, new_len = self.shape(batch, width, params.max_new_tokens)
        with self.runtime.active():
            state, label, mode = self._begin([[self.pad_id] * width] * batch, [params] * batch, eos_ids,
                                             batch, width, new_len)
            state = self.compiles.call(f"generation decode ({label})", self._decode, self.runtime.params, state,
                                       jnp.int32(0), self.runtime.put(np.zeros((batch,), bool)), mode=mode)
            jax.block_until_ready(state.tokens)

    def _begin(self, prompts, params, eos_ids, batch: int, width: int, new_len: int):
        """Left-pad the prompts into a [batch, width] array and run the prefill: the first
        decode state, the shape's label for logs, and the decode mode."""
        rows = len(prompts)
        eos = [int(e) for e in dict.fromkeys(eos_ids) if e is not None and e >= 0]
        if len(eos) > MAX_EOS_IDS:
            raise ValueError(f"at most {MAX_EOS_IDS} end-of-sequence ids, got {len(eos)}")
        mode = decode_mode(list(params))
        prompt = np.full((batch, width), self.pad_id, np.int32)
        prompt_len = np.ones((batch,), np.int32)
        for i, p in enumerate(prompts):
            prompt[i, width - len(p):] = p
            prompt_len[i] = len(p)
        all_params = list(params) + [SamplingParams(max_new_tokens=0)] * (batch - rows)
        host = dict(
            max_new=np.array([p.max_new_tokens for p in all_params], np.int32),
            temperature=np.array([p.temperature for p in all_params], np.float32),
            top_k=np.array([p.top_k for p in all_params], np.int32),
            top_p=np.array([p.top_p for p in all_params], np.float32),
            seeds=np.array([p.seed for p in all_params], np.uint32),
        )
        eos_arr = np.full((MAX_EOS_IDS,), -1, np.int32)
        eos_arr[:len(eos)] = eos
        put = self.runtime.put
        label = f"batch {batch}, prompt {width} tokens, {new_len} new tokens, {mode}"
        state = self.compiles.call(f"generation prefill ({label})", self._start, self.runtime.params, put(prompt),
                                   put(prompt_len), put(host["max_new"]), put(host["temperature"]),
                                   put(host["top_k"]), put(host["top_p"]), put(host["seeds"]),
                                   jnp.asarray(eos_arr), new_len=new_len, mode=mode)
        return state, label, mode
