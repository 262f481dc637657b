"""What the training loop does with a step whose loss or gradient norm is NaN or infinite.

`nonfinite = "stop"` (default): raise NonFiniteError naming the step; nothing after the
last checkpoint is saved. `nonfinite = "skip"`: the jitted step kept the previous parameters
and optimizer state (see `train.step.train_step`), and the step is counted in the metrics
as `skipped_steps`.

Each step's flag is read one step late, after the next step has been dispatched, so the
device never waits for the host; `settle()` reads the newest one at once (before a save
or a log line).
"""

from __future__ import annotations

import jax

from easylm_imitate.train.integrity import NonFiniteError

__all__ = ["MODES", "NonFiniteError", "NonFiniteGuard"]

MODES = ("stop", "skip")


class NonFiniteGuard:
    """Watches the `nonfinite`, `loss` and `grad_norm` metrics of each train step."""

    def __init__(self, mode: str):
        if mode not in MODES:
            raise ValueError(f"config.nonfinite: {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.skipped = 0
        self._pending: tuple[int, dict] | None = None

    @property
    def skip(self) -> bool:
        """Whether the jitted step must keep the old state on a non-finite step."""
        return self.mode == "skip"

    def observe(self, step: int, metrics: dict) -> None:
        """Take step `step`'s metrics (device arrays) and judge the previous step's."""
        previous, self._pending = self._pending, (step, metrics)
        if previous is not None:
            self._judge(*previous)

    def settle(self) -> None:
        """Judge the newest observed step now."""
        if self._pending is not None:
            self._judge(*self._pending)
            self._pending = None

    def log_scalars(self, scalars: dict) -> dict:
        """`scalars` of a log line without the per-step flag, with `skipped_steps` in skip mode."""
        self.settle()
        scalars = {k: v for k, v in scalars.items() if k != "nonfinite"}
        return {**scalars, "skipped_steps": float(self.skipped)} if self.skip else scalars

    def _judge(self, step: int, metrics: dict) -> None:
        values = jax.device_get({k: metrics[k] for k in ("nonfinite", "loss", "grad_norm")})
        if not float(values["nonfinite"]):
            return
        if self.skip:
            self.skipped += 1
            return
        raise NonFiniteError(
            f"step {step}: loss {float(values['loss'])}, gradient norm {float(values['grad_norm'])}; "
            f"stopped (nonfinite=stop) without saving it. The latest checkpoint is the last finite "
            f"state; lower the learning rate or check the data, or pass --config.nonfinite=skip "
            f"to skip such steps")
