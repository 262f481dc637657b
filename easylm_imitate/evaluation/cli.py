"""Flags shared by the eval/ binaries, and how a binary finishes a run."""

from __future__ import annotations

import functools
import logging
import os
import sys

from easylm_imitate.evaluation import results as results_lib
from easylm_imitate.fileio import write_jsonl_atomic

DEFAULT_MAX_ERROR_RATE = 0.05


def _binary_module() -> str:
    """The name absl gives the binary that called into this module, so the flags defined here
    belong to it and its --help lists them."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    name = frame.f_globals["__name__"] if frame is not None else "__main__"
    return sys.argv[0] if name == "__main__" else name


def _flag(define, name: str, default, help_text: str, **kwargs) -> None:
    define(name, default, help_text, module_name=_binary_module(), **kwargs)


def define_output_flags() -> None:
    """--out, --max_error_rate and the optional fields the report's plots use."""
    from absl import flags

    _flag(flags.DEFINE_string, "out", None, "Results JSON to write, e.g. results/mmlu.json; per-example rows go "
          "beside it with .json replaced by .details.jsonl (results/mmlu.details.jsonl).", required=True)
    _flag(flags.DEFINE_float, "max_error_rate", DEFAULT_MAX_ERROR_RATE,
          "Largest share of items that may fail (unparseable judgement, failed request) before the run is "
          "marked failed and exits non-zero; a run that scores no item always fails.")
    _flag(flags.DEFINE_string, "base_model", None, "Base model name recorded for the report's plots (e.g. llama-7b).")
    _flag(flags.DEFINE_float, "imitation_tokens", None, "Imitation tokens the model was fine-tuned on (0 for the base).")
    _flag(flags.DEFINE_float, "base_params", None, "Parameter count of the base model, for the size plot.")


def define_limit_flag(items: str) -> None:
    """--limit: evaluate only the first N `items` (every eval binary that reads a list of items)."""
    from absl import flags

    _flag(flags.DEFINE_integer, "limit", None, f"Evaluate only the first N {items}.", lower_bound=1)


def define_backend_flags() -> None:
    """Flags that pick the evaluated model: --endpoint/--endpoint_model or --checkpoint."""
    from absl import flags

    _flag(flags.DEFINE_string, "endpoint", None, "Base URL of an OpenAI-compatible server, e.g. http://host:8000/v1.")
    _flag(flags.DEFINE_string, "endpoint_model", None, "Model name to send to --endpoint.")
    _flag(flags.DEFINE_string, "api_key_env", "OPENAI_API_KEY", "Environment variable holding the endpoint's API key.")
    _flag(flags.DEFINE_string, "checkpoint", None, "Evaluate this checkpoint directory in-process instead of an endpoint.")
    _flag(flags.DEFINE_string, "model_name", None, "Name recorded in the results (default: endpoint model or checkpoint).")
    _flag(flags.DEFINE_integer, "batch_size", 8, "Prompts per backend request.")


def define_judge_flags(required: bool) -> None:
    """Flags for the judge model, reached through the project's journaled chat client."""
    from absl import flags

    help_suffix = "" if required else " (optional: without it the judged measures are skipped)"
    _flag(flags.DEFINE_string, "judge_endpoint", None, "Base URL of the judge's OpenAI-compatible API" + help_suffix + ".")
    _flag(flags.DEFINE_string, "judge_model", "gpt-4", "Judge model name.")
    _flag(flags.DEFINE_string, "judge_api_key_env", "OPENAI_API_KEY", "Environment variable holding the judge's API key.")
    _flag(flags.DEFINE_string, "judge_journal", None, "Journal file for judge requests (a rerun resumes without re-paying).")
    _flag(flags.DEFINE_integer, "judge_max_in_flight", 8, "Judge requests in flight (size it to what the judge "
          "endpoint serves at once).", lower_bound=1)
    from easylm_imitate.evaluation.judge import DEFAULT_MAX_TOKENS

    _flag(flags.DEFINE_integer, "judge_max_tokens", DEFAULT_MAX_TOKENS, "Reply length limit of each "
          "judgement. The shipped prompts ask for a short explanation, then the verdict; a judgement cut off "
          "before its verdict counts as a failed item.", lower_bound=1)
    _flag(flags.DEFINE_string, "judge_prompt", None, "Judge prompt JSON (default: the shipped pairwise prompt).")


def define_reply_flags(judge_required: bool, answers_out_help: str) -> None:
    """Every flag of a binary that compares a model's replies with a reference model's replies
    (eval/judge.py, eval/style.py): backend, output and judge flags, --limit, then --reference,
    --reference_name, --answers, --answers_out and --max_new_tokens."""
    from absl import flags

    define_backend_flags()
    define_output_flags()
    define_judge_flags(required=judge_required)
    define_limit_flag("prompts of --reference (before any reply is generated)")
    _flag(flags.DEFINE_string, "reference", None, "Prompts with the reference model's replies (JSONL).", required=True)
    _flag(flags.DEFINE_string, "reference_name", "reference", "Name of the reference model in the results.")
    _flag(flags.DEFINE_string, "answers", None, "The evaluated model's replies (JSONL); default: generate them with "
          "the backend.")
    _flag(flags.DEFINE_string, "answers_out", None, answers_out_help)
    _flag(flags.DEFINE_integer, "max_new_tokens", 512, "Reply length limit when generating.")


def load_replies(flags_obj):
    """(model reply, reference reply) pairs, the evaluated model's name and the rejected input
    lines, from the flags of `define_reply_flags`: the first --limit prompts of --reference (all
    without it); the model's replies are read from --answers, or generated with the backend
    (and saved to --answers_out when set)."""
    from easylm_imitate.evaluation import responses
    from easylm_imitate.evaluation.backends import make_backend

    reference, rejects = responses.load_responses(flags_obj.reference)
    if getattr(flags_obj, "limit", None):
        reference = dict(list(reference.items())[:flags_obj.limit])
    if flags_obj.answers:
        answers, more = responses.load_responses(flags_obj.answers)
        rejects += more
        model = flags_obj.model_name or flags_obj.answers
    else:
        backend = make_backend(flags_obj)
        answers = responses.generate_responses(backend, list(reference.values()),
                                               max_new_tokens=flags_obj.max_new_tokens)
        model = backend.name
        if flags_obj.answers_out:
            responses.write_responses(flags_obj.answers_out, answers)
    return responses.paired(answers, reference), model, rejects


def make_judge_client(flags_obj):
    """The journaled ChatClient for the judge flags, or None when --judge_endpoint is unset."""
    if not flags_obj.judge_endpoint:
        return None
    from easylm_imitate.imitation.client import ChatClient

    return ChatClient(flags_obj.judge_endpoint, flags_obj.judge_model,
                      api_key=os.environ.get(flags_obj.judge_api_key_env or ""),
                      journal=flags_obj.judge_journal, max_in_flight=flags_obj.judge_max_in_flight)


def sibling_path(out: str, suffix: str) -> str:
    """`out` with a trailing .json replaced by `suffix` (results/mmlu.json -> results/mmlu<suffix>)."""
    return (out[:-5] if out.endswith(".json") else out) + suffix


def details_path(out: str) -> str:
    """Where the per-example rows of `out` go: results/mmlu.json -> results/mmlu.details.jsonl."""
    return sibling_path(out, ".details.jsonl")


def failure_reason(n: int, failed_items: int = 0, attempted: int | None = None,
                   max_error_rate: float = DEFAULT_MAX_ERROR_RATE) -> str | None:
    """Why a run with `n` scored items and `failed_items` failed ones (out of `attempted`,
    default n + failed_items) must not count as a result; None when it may."""
    attempted = n + failed_items if attempted is None else attempted
    if n == 0:
        return (f"no item was scored ({failed_items} of {attempted} failed)" if failed_items
                else "no item was scored")
    if attempted and failed_items / attempted > max_error_rate:
        return (f"{failed_items} of {attempted} items failed ({failed_items / attempted:.1%}), more than "
                f"--max_error_rate={max_error_rate:g}")
    return None


def finish(record: dict, rows: list[dict] | None, out: str, *, base_model: str | None = None,
           imitation_tokens: float | None = None, base_params: float | None = None,
           rejects: list[dict] | None = None, failed_items: int = 0, attempted: int | None = None,
           max_error_rate: float = DEFAULT_MAX_ERROR_RATE) -> dict:
    """Annotate `record` for the report, mark it failed when it scored nothing or more than
    `max_error_rate` of the `attempted` items failed (see `failure_reason`), write it (and the
    per-example rows) atomically, log a summary; returns the record."""
    for key, value in (("base_model", base_model), ("imitation_tokens", imitation_tokens), ("base_params", base_params)):
        if value is not None:
            record[key] = value
    if rejects:
        record["settings"]["rejected_inputs"] = len(rejects)
        for r in rejects[:20]:
            logging.warning("rejected %s:%s: %s", r.get("file"), r.get("line"), r.get("reason"))
    if failed_items:
        record["failed_items"] = int(failed_items)
    if not results_lib.is_failed(record):
        reason = failure_reason(record["n"], failed_items, attempted, max_error_rate)
        if reason:
            results_lib.mark_failed(record, reason)
    if rows is not None:
        write_jsonl_atomic(details_path(out), rows)
    results_lib.write_results(out, record)
    headline = {k: v for k, v in record["metrics"].items() if "/" not in k}
    print(f"{record['benchmark']} {record['model']} n={record['n']} " +
          " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in headline.items()) +
          f" -> {out}")
    if results_lib.is_failed(record):
        print(f"FAILED: {record['benchmark']} {record['model']}: {record['failure']} (written to {out})",
              file=sys.stderr)
    return record


def output_kwargs(flags_obj) -> dict:
    """The keyword arguments of `finish` that come from the output flags."""
    return {"out": flags_obj.out, "base_model": flags_obj.base_model,
            "imitation_tokens": flags_obj.imitation_tokens, "base_params": flags_obj.base_params,
            "max_error_rate": getattr(flags_obj, "max_error_rate", DEFAULT_MAX_ERROR_RATE)}


def conclude(flags_obj, record: dict, rows: list[dict] | None, *, rejects: list[dict] | None = None,
             failed_items: int = 0, attempted: int | None = None) -> int:
    """`finish` with the output flags; returns the binary's exit status (1 when the run failed)."""
    record = finish(record, rows, rejects=rejects, failed_items=failed_items, attempted=attempted,
                    **output_kwargs(flags_obj))
    return 1 if results_lib.is_failed(record) else 0


def model_name_from_flags(flags_obj) -> str:
    """The evaluated model's name as the flags give it, without building a backend."""
    for name in ("model_name", "endpoint_model", "checkpoint", "answers", "samples"):
        value = getattr(flags_obj, name, None)
        if value:
            return value
    return "unknown"


def evaluation_main(benchmark: str):
    """Decorate an eval binary's main: an evaluation that raises `results.NothingScored`, or
    whose endpoint refuses a request or cannot be reached (`endpoint_errors`), writes a results
    file marked failed with the reason to --out, prints one `FAILED: ...` line and exits 1.
    Library INFO logs (httpx requests) are hidden unless --verbosity is given."""
    def decorate(main):
        @functools.wraps(main)
        def run(argv):
            from absl import flags

            from easylm_imitate.cli_logging import quiet_logs_by_default

            quiet_logs_by_default()  # httpx request lines would bury the progress bars
            try:
                return main(argv)
            except results_lib.NothingScored as e:
                reason = str(e)
            except endpoint_errors() as e:
                reason = endpoint_failure(e)
            record = results_lib.make_failed_results(benchmark, model_name_from_flags(flags.FLAGS), {}, reason)
            return conclude(flags.FLAGS, record, None)
        return run
    return decorate


def endpoint_errors() -> tuple[type[BaseException], ...]:
    """Errors of a model or judge endpoint that end an evaluation: a request the server refused
    (4xx, or 5xx after the client's retries), an unreachable server, a bad key or model name."""
    import openai

    from easylm_imitate.imitation.retry import FatalAPIError

    return (openai.APIStatusError, openai.APIConnectionError, FatalAPIError)


def endpoint_failure(error: BaseException) -> str:
    """One line saying which endpoint failed and how, for the failed results record."""
    request = getattr(error, "request", None)
    url = f" ({request.method} {request.url})" if request is not None else ""
    message = " ".join(str(error).split())
    return f"endpoint request failed{url}: {message}"
