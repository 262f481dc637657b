"""Style convergence of a model's replies towards the reference (target) model's replies.

  python eval/style.py --reference=heldout.jsonl --answers=model_replies.jsonl --out=style.json \
      [--judge_endpoint=URL --judge_model=gpt-4]   # adds the authoritative-tone measure
"""

from absl import app, flags

from easylm_imitate.evaluation import cli, responses, style
from easylm_imitate.evaluation.backends import make_backend

cli.define_backend_flags()
cli.define_output_flags()
cli.define_judge_flags(required=False)
flags.DEFINE_string("reference", None, "Prompts with the reference model's replies (JSONL).", required=True)
flags.DEFINE_string("reference_name", "reference", "Name of the reference model in the results.")
flags.DEFINE_string("answers", None, "The evaluated model's replies (JSONL); default: generate them with the backend.")
flags.DEFINE_string("answers_out", None, "Where to save generated replies.")
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
    pairs = responses.paired(answers, reference)
    client = cli.make_judge_client(FLAGS)
    tone = style.judge_tone(client, [m for m, _ in pairs], FLAGS.judge_prompt) if client else None
    settings = {"judge_model": FLAGS.judge_model if client else None}
    record, rows = style.evaluate(pairs, model, FLAGS.reference_name, settings, tone)
    cli.finish(record, rows, rejects=rejects, **cli.output_kwargs(FLAGS))


if __name__ == "__main__":
    app.run(main)
