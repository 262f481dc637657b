"""Pairwise LLM judge of a model's replies against a reference (target) model's replies.

  python eval/judge.py --reference=heldout.jsonl --endpoint=URL --endpoint_model=m \
      --judge_endpoint=https://api.openai.com/v1 --judge_model=gpt-4 --out=judge.json
"""

from absl import app, flags

from easylm_imitate.evaluation import cli, judge, responses
from easylm_imitate.evaluation.backends import make_backend

cli.define_backend_flags()
cli.define_output_flags()
cli.define_judge_flags(required=True)
flags.DEFINE_string("reference", None, "Prompts with the reference model's replies (JSONL).", required=True)
flags.DEFINE_string("reference_name", "reference", "Name of the reference model in the results.")
flags.DEFINE_string("answers", None, "The evaluated model's replies (JSONL); default: generate them with the backend.")
flags.DEFINE_string("answers_out", None, "Where to save generated replies (reuse them with --answers).")
flags.DEFINE_integer("max_new_tokens", 512, "Reply length limit when generating.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    reference, rejects = responses.load_responses(FLAGS.reference)
    if FLAGS.answers:
        answers, more = responses.load_responses(FLAGS.answers)
        rejects += more
        model = FLAGS.model_name or FLAGS.answers
    else:
        backend = make_backend(FLAGS)
        answers = responses.generate_responses(backend, list(reference.values()), max_new_tokens=FLAGS.max_new_tokens)
        model = backend.name
        if FLAGS.answers_out:
            responses.write_responses(FLAGS.answers_out, answers)
    client = cli.make_judge_client(FLAGS)
    if client is None:
        raise app.UsageError("--judge_endpoint is required")
    rows = judge.judge_pairs(client, responses.paired(answers, reference), judge.load_prompt(FLAGS.judge_prompt))
    settings = {"judge_model": FLAGS.judge_model, "judge_prompt": FLAGS.judge_prompt or "pairwise-v1",
                "both_orders": True, "flip_counts_as": "tie"}
    record = judge.summarize(rows, model, FLAGS.reference_name, settings)
    cli.finish(record, rows, rejects=rejects, **cli.output_kwargs(FLAGS))


if __name__ == "__main__":
    app.run(main)
