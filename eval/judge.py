"""Pairwise LLM judge of a model's replies against a reference (target) model's replies.

  python eval/judge.py --reference=heldout.jsonl --endpoint=URL --endpoint_model=m \
      --judge_endpoint=https://api.openai.com/v1 --judge_model=gpt-4 --out=judge.json
"""

from absl import app, flags

from easylm_imitate.evaluation import cli, judge

cli.define_reply_flags(judge_required=True,
                       answers_out_help="Where to save generated replies (reuse them with --answers).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    pairs, model, rejects = cli.load_replies(FLAGS)
    client = cli.make_judge_client(FLAGS)
    if client is None:
        raise app.UsageError("--judge_endpoint is required")
    rows = judge.judge_pairs(client, pairs, judge.load_prompt(FLAGS.judge_prompt))
    settings = {"judge_model": FLAGS.judge_model, "judge_prompt": FLAGS.judge_prompt or "pairwise-v1",
                "both_orders": True, "flip_counts_as": "tie"}
    record = judge.summarize(rows, model, FLAGS.reference_name, settings)
    cli.finish(record, rows, rejects=rejects, **cli.output_kwargs(FLAGS))


if __name__ == "__main__":
    app.run(main)
