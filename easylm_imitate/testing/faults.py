"""Which faults the OpenAI stub injects, and when.

A `FaultPlan` decides, for each chat request the stub receives, whether to answer it normally
or to fail it in one of these ways (`Fault.kind`):

- ``rate_limit``: HTTP 429 with a ``Retry-After`` header (``retry_after`` seconds; None: no header)
- ``server_error``: HTTP 500
- ``slow``: wait ``delay`` seconds, then answer normally (a client with a shorter timeout gives up)
- ``malformed``: HTTP 200 whose JSON body is cut off
- ``drop``: headers and half a body, then the connection is closed

For the lines of a batch job (``/v1/batches``) the same plan is asked per line body, with two
more kinds (other kinds answer a line normally):

- ``line_failed``: the line goes to the error file with a 500 response (not billed)
- ``line_expired``: the line goes to the error file as ``batch_expired`` (not billed) and the
  batch ends ``expired``
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable, Mapping, Sequence

KINDS = ("rate_limit", "server_error", "slow", "malformed", "drop")
LINE_KINDS = ("line_failed", "line_expired")


@dataclasses.dataclass(frozen=True)
class Fault:
    """One injected failure; see the module docstring for the kinds."""

    kind: str
    retry_after: float | None = 1.0
    delay: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS + LINE_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (expected one of {', '.join(KINDS + LINE_KINDS)})")


@dataclasses.dataclass
class FaultPlan:
    """When to inject faults.

    per_attempt: faults for the 1st, 2nd, ... time the stub sees the same request body (None in the
        list: answer that attempt normally); attempts past the list follow `random`.
    random: fault kind -> probability, drawn from a generator seeded with `seed`.
    retry_after / slow_delay: parameters of the faults drawn at random.
    decide: optional `fn(body, attempt) -> Fault | None` that overrides everything above.
    """

    per_attempt: Sequence[Fault | None] = ()
    random: Mapping[str, float] = dataclasses.field(default_factory=dict)
    seed: int = 0
    retry_after: float | None = 1.0
    slow_delay: float = 1.0
    decide: Callable[[dict, int], Fault | None] | None = None

    def __post_init__(self):
        for kind, p in self.random.items():
            Fault(kind)  # validates the name
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"probability for {kind!r} must be in [0, 1], got {p}")
        if sum(self.random.values()) > 1.0:
            raise ValueError("fault probabilities sum to more than 1")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def choose(self, body: dict, attempt: int) -> Fault | None:
        """The fault for the `attempt`-th (1-based) arrival of this request body, or None."""
        if self.decide is not None:
            return self.decide(body, attempt)
        if attempt <= len(self.per_attempt):
            return self.per_attempt[attempt - 1]
        if not self.random:
            return None
        with self._lock:
            u = self._rng.random()
        for kind, p in self.random.items():
            if u < p:
                return Fault(kind, retry_after=self.retry_after, delay=self.slow_delay)
            u -= p
        return None
