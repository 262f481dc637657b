"""What requests cost: estimates before a run (`--dry_run`), a hard cap during one (`--max_cost`),
and the spent cost from the usage the API reports.

Worst case of one request (what `--max_cost` reserves while it is in flight): a prompt-token
bound of one token per UTF-8 byte of the messages plus 4 per message and 3 for the reply primer
(no byte-level BPE tokenizer makes more tokens than bytes) and `n * max_tokens` completion tokens.
The dry-run estimate uses the usual ~4 characters per token instead, and `max_tokens` (or 512
when unset) per choice as the completion estimate.
"""

from __future__ import annotations

import dataclasses
import math
import threading

COMPLETION_GUESS = 512  # completion tokens assumed per choice when max_tokens is unset
BUDGET_STOP_EXIT = 3  # exit code of a run stopped by --max_cost


class BudgetExhausted(RuntimeError):
    """--max_cost would be exceeded by the next request; nothing more was sent."""


@dataclasses.dataclass(frozen=True)
class Prices:
    """USD per 1000 tokens, and the factor batch jobs are billed at (e.g. 0.5: half price)."""

    per_1k_prompt: float = 0.0
    per_1k_completion: float = 0.0
    batch_discount: float = 0.5

    def __post_init__(self):
        if self.per_1k_prompt < 0 or self.per_1k_completion < 0:
            raise ValueError("prices must not be negative")
        if not 0.0 < self.batch_discount <= 1.0:
            raise ValueError(f"batch_discount must be in (0, 1], got {self.batch_discount}")

    def cost(self, prompt_tokens: float, completion_tokens: float, channel: str = "live") -> float:
        """USD for that usage on `channel` ("live" or "batch")."""
        factor = self.batch_discount if channel == "batch" else 1.0
        return factor * (prompt_tokens * self.per_1k_prompt + completion_tokens * self.per_1k_completion) / 1000.0


def prompt_tokens_estimate(request: dict) -> int:
    """~4 characters per token over the message contents."""
    return math.ceil(sum(len(m["content"]) for m in request["messages"]) / 4)


def prompt_tokens_bound(request: dict) -> int:
    """An upper bound on the prompt tokens: UTF-8 bytes of the contents + 4 per message + 3."""
    messages = request["messages"]
    return sum(len(m["content"].encode("utf-8", "surrogatepass")) for m in messages) + 4 * len(messages) + 3


def completion_tokens_estimate(request: dict) -> int:
    """n * max_tokens, or n * COMPLETION_GUESS when max_tokens is unset."""
    return request.get("n", 1) * (request.get("max_tokens") or COMPLETION_GUESS)


def worst_cost(request: dict, prices: Prices, channel: str = "live") -> float:
    """The most `request` can cost; ValueError when it has no max_tokens (no bound exists)."""
    if not request.get("max_tokens"):
        raise ValueError("a cost cap needs a completion bound: set max_tokens (--max_tokens)")
    return prices.cost(prompt_tokens_bound(request), request.get("n", 1) * request["max_tokens"], channel)


def estimate(requests: list[dict], prices: Prices, channel: str = "live") -> dict:
    """The --dry_run summary of normalized requests: count, estimated tokens, estimated and worst cost."""
    prompt = sum(prompt_tokens_estimate(r) for r in requests)
    completion = sum(completion_tokens_estimate(r) for r in requests)
    bounded = all(r.get("max_tokens") for r in requests)
    worst = sum(worst_cost(r, prices, channel) for r in requests) if bounded else None
    return {"requests": len(requests), "prompt_tokens": prompt, "completion_tokens": completion,
            "completion_tokens_are": "max_tokens" if bounded else f"max_tokens or {COMPLETION_GUESS} when unset",
            "channel": channel, "cost": round(prices.cost(prompt, completion, channel), 6),
            "worst_cost": None if worst is None else round(worst, 6)}


class Budget:
    """Spent and reserved USD against an optional cap; thread-safe.

    `reserve(worst)` before a request (or a batch) goes out: False, and nothing reserved, when
    spent + reserved + worst would exceed the cap. Afterwards `settle(worst, actual)` moves the
    reservation to spent at the actual cost (what the API reported; the worst case when it may
    have billed without answering).
    """

    def __init__(self, prices: Prices, max_cost: float | None = None, spent: float = 0.0):
        """`spent`: what earlier runs over the same journal already cost."""
        if max_cost is not None and max_cost < 0:
            raise ValueError(f"max_cost must not be negative, got {max_cost}")
        self.prices, self.max_cost = prices, max_cost
        self._spent, self._reserved, self._lock = spent, 0.0, threading.Lock()
        self.refused: float | None = None  # the worst case of the first request refused

    @classmethod
    def from_journal(cls, journal, prices: Prices, max_cost: float | None = None) -> "Budget":
        """A budget whose spent is everything `journal` records as billed (answers and charges)."""
        spent = sum(prices.cost(u["prompt_tokens"], u["completion_tokens"], channel)
                    for channel, u in journal.usage_by_channel().items())
        return cls(prices, max_cost, spent + journal.charged())

    @property
    def spent(self) -> float:
        """USD spent so far (earlier runs included)."""
        return self._spent

    @property
    def reserved(self) -> float:
        """USD reserved for requests in flight."""
        return self._reserved

    def reserve(self, amount: float, force: bool = False) -> bool:
        """Reserve `amount` if the cap allows it (force: always, for work already in flight)."""
        with self._lock:
            if not force and self.max_cost is not None and self._spent + self._reserved + amount > self.max_cost:
                if self.refused is None:
                    self.refused = amount
                return False
            self._reserved += amount
            return True

    def settle(self, reserved: float, actual: float) -> None:
        """Drop a reservation of `reserved` and count `actual` as spent (0: not billed)."""
        with self._lock:
            self._reserved = max(0.0, self._reserved - reserved)
            self._spent += actual

    def stop_message(self) -> str:
        """Why the run stopped at the cap, and how to continue."""
        return (f"stopped by --max_cost={self.max_cost:g}: spent ${self._spent:.6f}; the next request's worst case "
                f"(${(self.refused or 0.0):.6f}) would exceed the cap. Answers so far are kept in the journal; "
                "rerun with a higher --max_cost to continue")
