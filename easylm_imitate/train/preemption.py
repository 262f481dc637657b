"""Stopping on SIGTERM/SIGINT at a step every process of the run agrees on.

After a stop the trainer saves a checkpoint, a collective: every process must save the same
step, or the run hangs. One process decides alone. Several processes use JAX's preemption
sync service (started by `jax.distributed.initialize`): its SIGTERM handler tells every
process through the coordination service, and `reached_preemption_sync_point` returns True
on all of them at the same loop iteration (one past the furthest any of them had reached).
"""

from __future__ import annotations

import logging
import os
import signal

import jax
from jax.experimental import multihost_utils


class StopRequest:
    """Whether the training loop should stop now: the same answer on every process."""

    def __init__(self):
        self.signal: int | None = None  # the signal this process received (single process only)
        self._mode = "agreed" if jax.process_count() > 1 else "local"
        self._previous = {}

    def install(self) -> None:
        """Catch SIGTERM and SIGINT (main thread only; elsewhere signals keep their handlers).

        With several processes SIGTERM stays with JAX's handler (a Python handler would
        replace it) and SIGINT is passed on to it as SIGTERM, so a Ctrl-C on one host also
        stops the whole run cleanly.
        """
        if self._mode == "agreed":
            try:
                multihost_utils.reached_preemption_sync_point(0)
            except RuntimeError as e:  # jax_enable_preemption_service turned off
                logging.warning("no preemption sync service (%s): SIGTERM/SIGINT stop this process only, "
                                "without a checkpoint", e)
                self._mode = "off"
                return
            handlers = {signal.SIGINT: self._forward_to_sigterm}
        else:
            handlers = {signal.SIGTERM: self._record, signal.SIGINT: self._record}
        for sig, handler in handlers.items():
            try:
                self._previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not in the main thread (e.g. called from a test thread)
                pass

    def _record(self, signum, frame):
        self.signal = signum

    @staticmethod
    def _forward_to_sigterm(signum, frame):
        os.kill(os.getpid(), signal.SIGTERM)

    def should_stop(self, iteration: int) -> bool:
        """Whether to save and stop before running loop iteration `iteration`.

        `iteration` counts the loop's iterations in this process run from 0 (not training
        steps), and must be passed for every iteration in order, on every process.
        """
        if self._mode == "agreed":
            return multihost_utils.reached_preemption_sync_point(iteration)
        return self.signal is not None

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
