"""absl flags shared by the binaries that query a target model, the ChatClient they describe,
and how such a binary runs and reports."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable

from easylm_imitate.imitation.batch_api import FALLBACKS, BatchClient
from easylm_imitate.imitation.client import ChatClient, api_key_from_env, normalize_request, request_key
from easylm_imitate.imitation.cost import BUDGET_STOP_EXIT, BudgetExhausted, Prices, estimate
from easylm_imitate.imitation.journal import Journal


def define_client_flags() -> None:
    """--base_url, --model, --api_key_env, --journal, limits, retries, timeout, prices, --dry_run,
    --max_cost and the --batch_* flags."""
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
    flags.DEFINE_float("price_per_1k_prompt", 0.0, "USD per 1000 prompt tokens (live price), for cost estimates, "
                       "--max_cost and the spent-cost report.")
    flags.DEFINE_float("price_per_1k_completion", 0.0, "USD per 1000 completion tokens (live price), as above.")
    flags.DEFINE_bool("dry_run", False, "Print the request count, estimated prompt/completion tokens and cost "
                      "(at the batch price with --batch_api) and exit without sending anything.")
    flags.DEFINE_float("max_cost", None, "USD cap over everything the journal records as billed: no request "
                       "(or batch) goes out whose worst case (prompt bound + max_tokens) would cross it; the run "
                       f"then stops with exit code {BUDGET_STOP_EXIT}, and a rerun with a higher cap continues. "
                       "Needs max_tokens.", lower_bound=0.0)
    flags.DEFINE_bool("batch_api", False, "Send the requests as OpenAI Batch jobs (/v1/files + /v1/batches), "
                      "journaled so a rerun re-attaches to a running job and nothing is paid twice.")
    flags.DEFINE_enum("batch_fallback", "batch", FALLBACKS, "Where failed or expired batch lines go: a new, "
                      "smaller batch ('batch') or live requests ('live').")
    flags.DEFINE_float("batch_discount", 0.5, "Batch price as a fraction of the live price.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_float("batch_poll_seconds", 30.0, "Seconds between polls of a running batch job.", lower_bound=0.0)
    flags.DEFINE_integer("batch_max_rounds", 3, "Batch jobs per round of requests at most (the first and its "
                         "retries of failed/expired lines); lines still failing are left for a rerun.", lower_bound=1)
    flags.DEFINE_integer("batch_max_requests", 50000, "Requests per batch job at most.", lower_bound=1)
    flags.DEFINE_bool("progress", True, "Show progress bars.")


def journal_path(flags_obj, out: str) -> str:
    """--journal, or `out` + '.journal' when unset."""
    return flags_obj.journal or out + ".journal"


def prices_from_flags(flags_obj) -> Prices:
    """--price_per_1k_prompt, --price_per_1k_completion and --batch_discount."""
    return Prices(flags_obj.price_per_1k_prompt, flags_obj.price_per_1k_completion, flags_obj.batch_discount)


def client_from_flags(flags_obj, out: str) -> ChatClient | BatchClient:
    """The ChatClient described by the flags (a BatchClient over it with --batch_api); the journal
    defaults to `out` + '.journal'."""
    api_key = api_key_from_env(flags_obj.api_key_env)
    live = ChatClient(flags_obj.base_url, flags_obj.model, api_key=api_key,
                      journal=journal_path(flags_obj, out), max_in_flight=flags_obj.max_in_flight,
                      requests_per_minute=flags_obj.requests_per_minute,
                      tokens_per_minute=flags_obj.tokens_per_minute, max_retries=flags_obj.max_retries,
                      timeout=flags_obj.timeout, price_per_1k_prompt=flags_obj.price_per_1k_prompt,
                      price_per_1k_completion=flags_obj.price_per_1k_completion, progress=flags_obj.progress,
                      batch_discount=flags_obj.batch_discount, max_cost=flags_obj.max_cost)
    if not flags_obj.batch_api:
        return live
    return BatchClient(live, api_key=api_key, poll_seconds=flags_obj.batch_poll_seconds,
                       fallback=flags_obj.batch_fallback, max_rounds=flags_obj.batch_max_rounds,
                       max_requests_per_batch=flags_obj.batch_max_requests, timeout=flags_obj.timeout)


def dry_run(flags_obj, requests: list[dict], note: str | None = None) -> None:
    """--dry_run: print what sending `requests` would cost (those the journal already answers are
    left out) as one JSON line, and exit 0 having sent nothing."""
    normalized = [normalize_request(r) for r in requests]
    path = journal_path(flags_obj, flags_obj.out)
    answered = set()
    if os.path.exists(path):
        journal = Journal(path)
        try:
            answered = set(journal.get_many(request_key(flags_obj.model, r) for r in normalized))
        finally:
            journal.close()
    todo = [r for r in normalized if request_key(flags_obj.model, r) not in answered]
    summary = estimate(todo, prices_from_flags(flags_obj), "batch" if flags_obj.batch_api else "live")
    summary["answered_in_journal"] = len(normalized) - len(todo)
    if note:
        summary["note"] = note
    print(json.dumps(summary))
    print(f"dry run: {summary['requests']} request(s), ~{summary['prompt_tokens']} prompt + "
          f"<= {summary['completion_tokens']} completion tokens, ~${summary['cost']:.4f} "
          f"({summary['channel']} price); nothing sent", file=sys.stderr)
    sys.exit(0)


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
    """`work(client)` with the flags' client, whose journal defaults to --out + '.journal';
    Ctrl-C exits 130 (see `resumable`); --max_cost stopping the run exits BUDGET_STOP_EXIT with
    a message. Prints the spent cost either way. Returns what `work` returns."""
    journal = journal_path(flags_obj, flags_obj.out)
    with resumable(journal), client_from_flags(flags_obj, flags_obj.out) as client:
        try:
            return work(client)
        except BudgetExhausted as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(BUDGET_STOP_EXIT)
        finally:
            print_spent(client.stats())


def print_spent(stats: dict) -> None:
    """One stderr line: this run's cost from the API-reported usage, and the journal's total."""
    print(f"spent ${stats['cost']:.6f} this run ({stats['prompt_tokens']} prompt + {stats['completion_tokens']} "
          f"completion tokens as the API reported them); ${stats['journal_spent']:.6f} over the whole journal",
          file=sys.stderr)


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
