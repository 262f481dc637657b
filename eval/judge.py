"""Pairwise LLM judge of a model's replies against a reference (target) model's replies.

  python eval/judge.py --reference=heldout.jsonl --endpoint=URL --endpoint_model=m \\
      --judge_endpoint=https://api.openai.com/v1 --judge_model=gpt-4 --out=judge.json
"""

from absl import app, flags

from easylm_imitate.evaluation import cli, judge

cli.define_reply_flags(judge_required=True,
                       answers_out_help="Where to save generated replies (reuse them with --answers).")
FLAGS = flags.FLAGS


@cli.evaluation_main("llm_judge")
def main(argv):
    del argv
    pairs, model, rejects = cli.load_replies(FLAGS)
    client = cli.make_judge_client(FLAGS)
    if client is None:
        raise app.UsageError("--judge_endpoint is required")
    rows = judge.judge_pairs(client, pairs, judge.load_prompt(FLAGS.judge_prompt), max_tokens=FLAGS.judge_max_tokens)
    settings = {"judge_model": FLAGS.judge_model, "judge_prompt": FLAGS.judge_prompt or "pairwise-v1",
                "both_orders": True, "flip_counts_as": "tie",
                "judge_max_tokens": FLAGS.judge_max_tokens, "limit": FLAGS.limit}
    record = judge.summarize(rows, model, FLAGS.reference_name, settings)
    return cli.conclude(FLAGS, record, rows, rejects=rejects, failed_items=record["metrics"]["errors"])


if __name__ == "__main__":
    app.run(main)
