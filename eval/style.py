"""Style convergence of a model's replies towards the reference (target) model's replies.

  python eval/style.py --reference=heldout.jsonl --answers=model_replies.jsonl --out=style.json \\
      [--judge_endpoint=URL --judge_model=gpt-4]   # adds the authoritative-tone measure
"""

from absl import app, flags

from easylm_imitate.evaluation import cli, style

cli.define_reply_flags(judge_required=False, answers_out_help="Where to save generated replies.")
FLAGS = flags.FLAGS


@cli.evaluation_main("style")
def main(argv):
    del argv
    pairs, model, rejects = cli.load_replies(FLAGS)
    client = cli.make_judge_client(FLAGS)
    tone = (style.judge_tone(client, [m for m, _ in pairs], FLAGS.judge_prompt, max_tokens=FLAGS.judge_max_tokens)
            if client and pairs else None)
    settings = {"judge_model": FLAGS.judge_model if client else None, "limit": FLAGS.limit}
    record, rows = style.evaluate(pairs, model, FLAGS.reference_name, settings, tone)
    return cli.conclude(FLAGS, record, rows, rejects=rejects, failed_items=record["metrics"].get("tone_errors", 0),
                        attempted=record["n"])


if __name__ == "__main__":
    app.run(main)
