"""Flags shared by the eval/ binaries, and how a binary finishes a run."""

from __future__ import annotations

import logging
import os
import sys

from easylm_imitate.evaluation import results as results_lib
from easylm_imitate.fileio import write_jsonl_atomic


def define_output_flags() -> None:
    """--out plus the optional fields the report's plots use."""
    from absl import flags

    flags.DEFINE_string("out", None, "Results JSON to write (per-example details go beside it as .details.jsonl).", required=True)
    flags.DEFINE_string("base_model", None, "Base model name recorded for the report's plots (e.g. llama-7b).")
    flags.DEFINE_float("imitation_tokens", None, "Imitation tokens the model was fine-tuned on (0 for the base).")
    flags.DEFINE_float("base_params", None, "Parameter count of the base model, for the size plot.")


def define_backend_flags() -> None:
    """Flags that pick the evaluated model: --endpoint/--endpoint_model or --checkpoint."""
    from absl import flags

    flags.DEFINE_string("endpoint", None, "Base URL of an OpenAI-compatible server, e.g. http://host:8000/v1.")
    flags.DEFINE_string("endpoint_model", None, "Model name to send to --endpoint.")
    flags.DEFINE_string("api_key_env", "OPENAI_API_KEY", "Environment variable holding the endpoint's API key.")
    flags.DEFINE_string("checkpoint", None, "Evaluate this checkpoint directory in-process instead of an endpoint.")
    flags.DEFINE_string("model_name", None, "Name recorded in the results (default: endpoint model or checkpoint).")
    flags.DEFINE_integer("batch_size", 8, "Prompts per backend request.")


def define_judge_flags(required: bool) -> None:
    """Flags for the judge model, reached through the project's journaled chat client."""
    from absl import flags

    help_suffix = "" if required else " (optional: without it the judged measures are skipped)"
    flags.DEFINE_string("judge_endpoint", None, "Base URL of the judge's OpenAI-compatible API" + help_suffix + ".")
    flags.DEFINE_string("judge_model", "gpt-4", "Judge model name.")
    flags.DEFINE_string("judge_api_key_env", "OPENAI_API_KEY", "Environment variable holding the judge's API key.")
    flags.DEFINE_string("judge_journal", None, "Journal file for judge requests (a rerun resumes without re-paying).")
    flags.DEFINE_integer("judge_max_in_flight", 8, "Judge requests in flight.")
    flags.DEFINE_string("judge_prompt", None, "Judge prompt JSON (default: the shipped pairwise prompt).")


def define_reply_flags(judge_required: bool, answers_out_help: str) -> None:
    """Every flag of a binary that compares a model's replies with a reference model's replies
    (eval/judge.py, eval/style.py): backend, output and judge flags, then --reference,
    --reference_name, --answers, --answers_out and --max_new_tokens. The last five belong to
    the calling binary, so its --help lists them."""
    from absl import flags

    caller = sys._getframe(1).f_globals["__name__"]
    module_name = sys.argv[0] if caller == "__main__" else caller  # how absl names a binary's module
    define_backend_flags()
    define_output_flags()
    define_judge_flags(required=judge_required)
    flags.DEFINE_string("reference", None, "Prompts with the reference model's replies (JSONL).", required=True,
                        module_name=module_name)
    flags.DEFINE_string("reference_name", "reference", "Name of the reference model in the results.",
                        module_name=module_name)
    flags.DEFINE_string("answers", None, "The evaluated model's replies (JSONL); default: generate them with "
                        "the backend.", module_name=module_name)
    flags.DEFINE_string("answers_out", None, answers_out_help, module_name=module_name)
    flags.DEFINE_integer("max_new_tokens", 512, "Reply length limit when generating.", module_name=module_name)


def load_replies(flags_obj):
    """(model reply, reference reply) pairs, the evaluated model's name and the rejected input
    lines, from the flags of `define_reply_flags`: the model's replies are read from --answers,
    or generated with the backend (and saved to --answers_out when set)."""
    from easylm_imitate.evaluation import responses
    from easylm_imitate.evaluation.backends import make_backend

    reference, rejects = responses.load_responses(flags_obj.reference)
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


def details_path(out: str) -> str:
    """Where the per-example rows of `out` go."""
    root = out[:-5] if out.endswith(".json") else out
    return root + ".details.jsonl"


def finish(record: dict, rows: list[dict] | None, out: str, *, base_model: str | None = None,
           imitation_tokens: float | None = None, base_params: float | None = None,
           rejects: list[dict] | None = None) -> dict:
    """Annotate `record` for the report, write it (and per-example rows) atomically, log a summary."""
    for key, value in (("base_model", base_model), ("imitation_tokens", imitation_tokens), ("base_params", base_params)):
        if value is not None:
            record[key] = value
    if rejects:
        record["settings"]["rejected_inputs"] = len(rejects)
        for r in rejects[:20]:
            logging.warning("rejected %s:%s: %s", r.get("file"), r.get("line"), r.get("reason"))
    if rows is not None:
        write_jsonl_atomic(details_path(out), rows)
    results_lib.write_results(out, record)
    headline = {k: v for k, v in record["metrics"].items() if "/" not in k}
    logging.info("%s on %s (n=%d): %s -> %s", record["benchmark"], record["model"], record["n"], headline, out)
    print(f"{record['benchmark']} {record['model']} n={record['n']} " +
          " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in headline.items()))
    return record


def output_kwargs(flags_obj) -> dict:
    """The keyword arguments of `finish` that come from the output flags."""
    return {"out": flags_obj.out, "base_model": flags_obj.base_model,
            "imitation_tokens": flags_obj.imitation_tokens, "base_params": flags_obj.base_params}
