"""Run the OpenAI stub as a local server for dry runs of the collection binaries.

  python -m easylm_imitate.testing.serve_stub --port=8000 --responder=qa --faults=rate_limit:0.05,drop:0.02
  python -m easylm_imitate.imitation.nq_synthetic --base_url=http://127.0.0.1:8000/v1 --model=stub --out=/tmp/nq.jsonl
"""

from __future__ import annotations

import signal
import time

from absl import app, flags

from easylm_imitate.testing.faults import KINDS, LINE_KINDS, FaultPlan
from easylm_imitate.testing.openai_stub import OpenAIStub
from easylm_imitate.testing.responders import echo_responder, qa_responder

RESPONDERS = {"echo": echo_responder, "qa": qa_responder(), "qa_junk": qa_responder(junk=True)}


def _define_flags() -> None:
    flags.DEFINE_integer("port", 8000, "Port on 127.0.0.1 (0: a free one, printed at start).")
    flags.DEFINE_enum("responder", "echo", sorted(RESPONDERS), "What the server answers.")
    flags.DEFINE_list("faults", [], f"Random faults as KIND:PROBABILITY (kinds: {', '.join(KINDS)}).")
    flags.DEFINE_float("retry_after", 1.0, "Retry-After seconds sent with injected 429s.")
    flags.DEFINE_float("slow_delay", 2.0, "Seconds an injected slow response takes.")
    flags.DEFINE_float("delay", 0.0, "Seconds every reply takes.")
    flags.DEFINE_string("api_key", None, "Require this bearer key (default: none).")
    flags.DEFINE_list("batch_faults", [], f"Random batch-line faults as KIND:PROBABILITY (kinds: {', '.join(LINE_KINDS)}).")
    flags.DEFINE_float("batch_seconds", 0.0, "Seconds a batch job stays in progress.")


def parse_faults(items: list[str], kinds: tuple[str, ...] = KINDS, flag: str = "--faults") -> dict[str, float]:
    """{'kind': probability} from ['kind:p', ...] with kinds from `kinds`; raises ValueError naming the bad item."""
    out = {}
    for item in items:
        kind, sep, p = item.partition(":")
        try:
            out[kind] = float(p)
        except ValueError:
            raise ValueError(f"{flag} item {item!r} is not KIND:PROBABILITY") from None
        if not sep or kind not in kinds:
            raise ValueError(f"{flag} item {item!r}: kind must be one of {', '.join(kinds)}")
    return out


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv) -> None:
    """Serve until interrupted."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops it like Ctrl-C
    plan = FaultPlan(random=parse_faults(f.faults), retry_after=f.retry_after, slow_delay=f.slow_delay)
    batch_plan = FaultPlan(random=parse_faults(f.batch_faults, LINE_KINDS, "--batch_faults"))
    with OpenAIStub(responder=RESPONDERS[f.responder], faults=plan, api_key=f.api_key, delay=f.delay,
                    port=f.port, batch_faults=batch_plan, batch_seconds=f.batch_seconds) as stub:
        print(f"serving {stub.base_url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        print(f"{len(stub.request_log)} requests, max concurrency {stub.max_concurrency}")


def run() -> None:
    """Console entry point."""
    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
