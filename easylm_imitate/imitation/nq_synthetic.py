r"""Build the NQ-synthetic imitation set by querying a target model (the paper's NQ-synthetic procedure).

  python -m easylm_imitate.imitation.nq_synthetic --base_url=https://api.openai.com/v1 \
      --model=gpt-3.5-turbo --out=data/nq_synthetic.jsonl --exclude_questions=data/nq_eval.jsonl

Rerunning the same command after a crash resumes from the journal (--journal, default
OUT.journal) without re-sending finished requests. Writes OUT (canonical records) and
OUT.report.json; exits 1 when --max_calls ran out before --num_examples, 3 when --max_cost
stopped the run (rerun with a higher cap). --batch_api sends each round of calls as an OpenAI
Batch job; --dry_run prints the estimated cost of the calls and sends nothing.
"""

from __future__ import annotations

import math
import sys

from absl import app, flags

from easylm_imitate.imitation import client_flags
from easylm_imitate.imitation.nq_generate import NQSyntheticConfig, call_request, generate_to_file
from easylm_imitate.imitation.qa_pairs import load_seeds


def _define_flags() -> None:
    client_flags.define_client_flags()
    flags.adopt_module_key_flags(client_flags)
    flags.DEFINE_string("out", None, "Output JSONL of canonical single-turn records.", required=True)
    flags.DEFINE_integer("num_examples", 6000, "Unique examples to collect.")
    flags.DEFINE_integer("seed", 0, "Seed for the seed draws (and each request's seed field).")
    flags.DEFINE_string("exclude_questions", None,
                        "Evaluation JSONL ('question', 'prompt' or canonical records): matching questions are dropped.")
    flags.DEFINE_string("seeds", None, "Seed QA pairs JSONL (default: the 10 NQ pairs shipped in the package).")
    flags.DEFINE_integer("pairs_per_call", 10, "QA pairs asked for per request.")
    flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
    flags.DEFINE_integer("max_tokens", 1024, "Completion token limit per request.")
    flags.DEFINE_integer("max_answer_words", 16, "Longer answers count as malformed.")
    flags.DEFINE_integer("max_calls", None, "Give up after this many requests (default: --num_examples).")


def main(argv) -> None:
    """Run NQ-synthetic with the parsed flags."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    config = NQSyntheticConfig(num_examples=f.num_examples, seed=f.seed, pairs_per_call=f.pairs_per_call,
                               temperature=f.temperature, max_tokens=f.max_tokens,
                               max_answer_words=f.max_answer_words, max_calls=f.max_calls)
    if f.dry_run:
        seeds = load_seeds(f.seeds)
        expected = math.ceil(config.num_examples / config.pairs_per_call)
        client_flags.dry_run(f, [call_request(seeds, config, i)[0] for i in range(expected)],
                             f"{expected} call(s) if every call yields {config.pairs_per_call} new pairs; at most "
                             f"{config.max_calls or config.num_examples} (--max_calls)")
    report = client_flags.query_target(
        f, lambda client: generate_to_file(client, f.out, config, seeds_path=f.seeds,
                                           exclude_path=f.exclude_questions, progress=f.progress))
    print(f"wrote {report['examples']} examples to {f.out} (report: {f.out}.report.json)", file=sys.stderr)
    short = report["short"]
    client_flags.report_and_exit(
        report, ("examples", "short", "calls", "failed_calls", "malformed", "dropped"),
        f"{short} examples short after {report['calls']} calls ({report['failed_calls']} failed); "
        "raise --max_calls or rerun to retry failed calls" if short else None)


# Console entry point (easylm-nq-synthetic).
run = client_flags.console_entry(_define_flags, main)

if __name__ == "__main__":
    run()
