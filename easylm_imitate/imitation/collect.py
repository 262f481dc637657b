r"""Collect a target model's replies to a prompts file as imitation records.

  python -m easylm_imitate.imitation.collect --base_url=https://api.openai.com/v1 --model=gpt-3.5-turbo \
      --prompts=prompts.jsonl --out=data/imitation.jsonl --samples_per_prompt=2 --temperature=0.7

Prompts file lines: {"prompt": ...}, {"id", "prompt"[, "system", "meta"]}, or a canonical record
whose turns end in a user turn. Bad lines go to --rejects (default OUT.rejects.jsonl) with their
line and reason. Rerunning the same command resumes from the journal (default OUT.journal);
exits 1 when the file held no usable prompt, or when some prompts still failed after all retries
(rerun to retry them), and 3 when --max_cost stopped the run (rerun with a higher cap).
--batch_api sends the requests as OpenAI Batch jobs; --dry_run prints the estimated cost and
sends nothing; --top_logprobs=K stores the target's token log-probabilities in meta.
"""

from __future__ import annotations

import sys

from absl import app, flags

from easylm_imitate.imitation import client_flags
from easylm_imitate.imitation.collection import SAMPLE_WITH, CollectConfig, build_requests, collect_to_file
from easylm_imitate.imitation.prompts import read_prompts


def _define_flags() -> None:
    client_flags.define_client_flags()
    flags.adopt_module_key_flags(client_flags)
    flags.DEFINE_string("prompts", None, "Prompts JSONL (see the module docstring).", required=True)
    flags.DEFINE_string("out", None, "Output JSONL of canonical records.", required=True)
    flags.DEFINE_string("rejects", None, "Rejected prompt lines (default: --out + '.rejects.jsonl').")
    flags.DEFINE_integer("samples_per_prompt", 1, "Replies per prompt.")
    flags.DEFINE_enum("sample_with", "n", SAMPLE_WITH,
                      "'n': one request with n choices; 'seed': one request per sample (for servers without n).")
    flags.DEFINE_float("temperature", None, "Sampling temperature (default: the server's).")
    flags.DEFINE_float("top_p", None, "Nucleus sampling (default: the server's).")
    flags.DEFINE_integer("max_tokens", None, "Completion token limit (default: the server's).")
    flags.DEFINE_string("source", None, "Record source field (default: 'target:<model>').")
    flags.DEFINE_integer("top_logprobs", None, "0-20: ask for logprobs with this many alternatives per token and "
                         "store them in each record's meta['target_logprobs'] (default: not asked for).",
                         lower_bound=0, upper_bound=20)


def main(argv) -> None:
    """Collect replies with the parsed flags."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    config = CollectConfig(samples_per_prompt=f.samples_per_prompt, sample_with=f.sample_with,
                           temperature=f.temperature, top_p=f.top_p, max_tokens=f.max_tokens, source=f.source,
                           top_logprobs=f.top_logprobs)
    if f.max_cost is not None and not f.max_tokens:
        raise app.UsageError("--max_cost needs --max_tokens (the worst case of a request must be bounded)")
    if f.dry_run:
        prompts, rejects = read_prompts(f.prompts)
        client_flags.dry_run(f, [request for _, _, request in build_requests(prompts, config)],
                             f"{len(prompts)} prompt(s), {len(rejects)} rejected line(s)")
    report = client_flags.query_target(
        f, lambda client: collect_to_file(client, f.prompts, f.out, config, rejects_path=f.rejects))
    print(f"wrote {report['records']} records to {f.out}", file=sys.stderr)
    client_flags.report_and_exit(
        report, ("prompts", "records", "rejected_lines", "failed_samples", "empty_replies"), _failure(report, f.prompts))


def _failure(report: dict, prompts_path: str) -> str | None:
    """Why the run counts as failed (exit 1), or None: no usable prompt, or unanswered samples."""
    if not report["prompts"]:
        reasons = ", ".join(f"{n} {r}" for r, n in report["rejects_by_reason"].items()) or "the file is empty"
        return (f"error: {prompts_path}: no usable prompt ({report['rejected_lines']} line(s) rejected: {reasons}; "
                f"see {report['rejects_file']})")
    if report["failed_samples"]:
        return (f"{report['failed_samples']} prompt sample(s) failed after all retries (see {report['out']}.report.json); "
                "rerun the same command to retry them")
    return None


# Console entry point (easylm-collect).
run = client_flags.console_entry(_define_flags, main)

if __name__ == "__main__":
    run()
