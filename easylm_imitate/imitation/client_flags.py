"""absl flags shared by the binaries that query a target model, the ChatClient they describe,
and how such a binary runs and reports."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterable

from easylm_imitate.imitation.client import ChatClient, api_key_from_env


def define_client_flags() -> None:
    """--base_url, --model, --api_key_env, --journal, limits, retries, timeout and prices."""
    from absl import flags

    flags.DEFINE_string("base_url", None, "Base URL of the target's OpenAI-compatible API, e.g. https://api.openai.com/v1.",
                        required=True)
    flags.DEFINE_string("model", None, "Target model name sent with every request.", required=True)
    flags.DEFINE_string("api_key_env", "OPENAI_API_KEY",
                        "Environment variable holding the API key (unset or empty: no key, e.g. a local server).")
    flags.DEFINE_string("journal", None, "sqlite journal of every request (default: --out + '.journal'); "
                        "rerunning the same command resumes from it without re-sending finished requests.")
    flags.DEFINE_integer("max_in_flight", 8, "Most requests outstanding at once.")
    flags.DEFINE_float("requests_per_minute", None, "Request rate limit (default: none).")
    flags.DEFINE_float("tokens_per_minute", None, "Token rate limit, prompt + completion (default: none).")
    flags.DEFINE_integer("max_retries", 8, "Retries per request on 429/5xx/timeouts/connection errors/bad bodies.")
    flags.DEFINE_float("timeout", 120.0, "Seconds per request attempt.")
    flags.DEFINE_float("price_per_1k_prompt", 0.0, "Price per 1000 prompt tokens, for the cost report.")
    flags.DEFINE_float("price_per_1k_completion", 0.0, "Price per 1000 completion tokens, for the cost report.")
    flags.DEFINE_bool("progress", True, "Show progress bars.")


def journal_path(flags_obj, out: str) -> str:
    """--journal, or `out` + '.journal' when unset."""
    return flags_obj.journal or out + ".journal"


def client_from_flags(flags_obj, out: str) -> ChatClient:
    """The ChatClient described by the flags; the journal defaults to `out` + '.journal'."""
    return ChatClient(flags_obj.base_url, flags_obj.model, api_key=api_key_from_env(flags_obj.api_key_env),
                      journal=journal_path(flags_obj, out), max_in_flight=flags_obj.max_in_flight,
                      requests_per_minute=flags_obj.requests_per_minute,
                      tokens_per_minute=flags_obj.tokens_per_minute, max_retries=flags_obj.max_retries,
                      timeout=flags_obj.timeout, price_per_1k_prompt=flags_obj.price_per_1k_prompt,
                      price_per_1k_completion=flags_obj.price_per_1k_completion, progress=flags_obj.progress)


@contextlib.contextmanager
def resumable(journal_hint: str):
    """Turn Ctrl-C into a short message (exit 130): finished requests are safe in the journal."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"interrupted: finished requests are kept in {journal_hint}; rerun the same command to resume",
              file=sys.stderr)
        sys.exit(130)


def query_target(flags_obj, work: Callable[[ChatClient], dict]) -> dict:
    """`work(client)` with the flags' ChatClient, whose journal defaults to --out + '.journal';
    Ctrl-C exits 130 (see `resumable`). Returns what `work` returns."""
    journal = journal_path(flags_obj, flags_obj.out)
    with resumable(journal), client_from_flags(flags_obj, flags_obj.out) as client:
        return work(client)


def report_and_exit(report: dict, keys: Iterable[str], failure: str | None = None) -> None:
    """Print the `keys` of `report` as one JSON line; then exit 1 with `failure` when it is set."""
    print(json.dumps({k: report[k] for k in keys}))
    if failure:
        sys.exit(failure)


def console_entry(define_flags: Callable[[], None], main: Callable) -> Callable[[], None]:
    """The console entry point of a binary: define its flags, then `absl.app.run(main)` with
    library INFO logs (httpx logs each request) hidden unless --verbosity is given."""
    from absl import app

    from easylm_imitate.cli_logging import quiet_logs_by_default

    def quiet_main(argv):
        quiet_logs_by_default()
        return main(argv)

    def run() -> None:
        """Console entry point."""
        define_flags()
        app.run(quiet_main)

    return run
