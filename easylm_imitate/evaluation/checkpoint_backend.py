"""`CheckpointBackend`: the evaluation `LMBackend` protocol served by our own checkpoint,
in-process (no HTTP), through the same `Engine` the server uses."""

from __future__ import annotations

import os

from easylm_imitate.inference.engine import Engine, GenRequest
from easylm_imitate.inference.sampling import SamplingParams


class CheckpointBackend:
    """An `LMBackend` over a checkpoint directory, or over `(model, tokenizer)` already loaded.

    Requests are run in batches of `batch_size` rows; sampling with temperature > 0 draws
    row j of a prompt with seed `seed + j`, so results are reproducible.
    """

    def __init__(self, path_or_model_and_tokenizer, *, batch_size: int = 8, mesh=None, name: str | None = None,
                 **load_overrides):
        if isinstance(path_or_model_and_tokenizer, (str, os.PathLike)):
            import easylm_imitate

            path = os.fspath(path_or_model_and_tokenizer)
            model, tokenizer = easylm_imitate.load(path, mesh=mesh, **load_overrides)
            default_name = os.path.basename(os.path.normpath(path))
        else:
            model, tokenizer = path_or_model_and_tokenizer
            default_name = "checkpoint"
        self.name = name or default_name
        self.batch_size = max(1, batch_size)
        self.engine = Engine(model, tokenizer, mesh)

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """For each (context, continuation): summed log-prob of the continuation and whether
        it is the greedy one."""
        return self.engine.loglikelihood(list(requests))

    def _run(self, prompt_ids: list[list[int]], *, max_new_tokens: int, stop: list[str], temperature: float,
             n: int, seed: int) -> list[list[str]]:
        rows = [GenRequest(ids, SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                               seed=(seed + j) % 2 ** 32), list(stop))
                for ids in prompt_ids for j in range(n)]
        texts = []
        for start in range(0, len(rows), self.batch_size):
            texts += [r.text for r in self.engine.generate(rows[start:start + self.batch_size])]
        return [texts[i * n:(i + 1) * n] for i in range(len(prompt_ids))]

    def generate(self, prompts: list[str], *, max_new_tokens: int, stop: list[str],
                 temperature: float = 0.0, n: int = 1, seed: int = 0) -> list[list[str]]:
        """For each prompt, `n` raw-text continuations cut before the first stop string."""
        return self._run([self.engine.encode(p) for p in prompts], max_new_tokens=max_new_tokens,
                         stop=stop, temperature=temperature, n=n, seed=seed)

    def chat(self, conversations: list[list[dict]], *, max_new_tokens: int,
             temperature: float = 0.0, n: int = 1) -> list[list[str]]:
        """For each conversation (OpenAI-style message dicts), `n` assistant replies rendered
        with the checkpoint's chat template."""
        return self._run([self.engine.chat_ids(c) for c in conversations], max_new_tokens=max_new_tokens,
                         stop=[], temperature=temperature, n=n, seed=0)
