"""k-shot Natural Questions (open): greedy answers, exact match over gold aliases.

  python eval/nq_open.py --endpoint=http://localhost:8000/v1 --endpoint_model=m --data=hf:nq_open --out=nq.json
"""

from absl import app, flags

from easylm_imitate.evaluation import cli, nq
from easylm_imitate.evaluation.backends import make_backend

cli.define_backend_flags()
cli.define_output_flags()
flags.DEFINE_string("data", "hf:nq_open", "Questions: a JSONL file (question, answer list), hf:NAME, or tfds:DATA_DIR.")
flags.DEFINE_string("split", "validation", "Split to evaluate when --data is hf: or tfds:.")
flags.DEFINE_string("shots", None, "Shot examples: same forms as --data (default: the train split of --data; "
                    "required when --data is a file and k > 0).")
flags.DEFINE_integer("k", 3, "Number of shots (0 allowed); the first k shot examples are used.")
flags.DEFINE_integer("max_new_tokens", 32, "Generation length limit.")
cli.define_limit_flag("questions")
FLAGS = flags.FLAGS


@cli.evaluation_main("nq_open")
def main(argv):
    del argv
    questions, rejects = nq.load(FLAGS.data, FLAGS.split)
    shots = []
    if FLAGS.k > 0:
        source = FLAGS.shots or (FLAGS.data if FLAGS.data.startswith(("hf:", "tfds:")) else None)
        if source is None:
            raise app.UsageError("--shots is required with a --data file and --k > 0")
        shots, shot_rejects = nq.load(source, "train")
        rejects += shot_rejects
    record, rows = nq.evaluate(make_backend(FLAGS), questions, shots, k=FLAGS.k,
                               max_new_tokens=FLAGS.max_new_tokens, limit=FLAGS.limit)
    return cli.conclude(FLAGS, record, rows, rejects=rejects)


if __name__ == "__main__":
    app.run(main)
