"""k-shot MMLU by log-likelihood of " A".." D" (lm-evaluation-harness prompt format).

  python eval/mmlu.py --endpoint=http://localhost:8000/v1 --endpoint_model=m --data=hf:cais/mmlu --out=mmlu.json
"""

from absl import app, flags

from easylm_imitate.evaluation import cli, mmlu
from easylm_imitate.evaluation.backends import make_backend

cli.define_backend_flags()
cli.define_output_flags()
flags.DEFINE_string("data", "hf:cais/mmlu", "Directory in the original MMLU CSV layout (dev/, test/) or hf:NAME[:CONFIG].")
flags.DEFINE_string("split", "test", "Split to evaluate (test or val).")
flags.DEFINE_integer("k", 5, "Number of shots (the first k dev examples of each subject).")
flags.DEFINE_list("subjects", None, "Only these subjects (default: all found).")
flags.DEFINE_integer("limit_per_subject", None, "At most this many questions per subject.")
FLAGS = flags.FLAGS


@cli.evaluation_main("mmlu")
def main(argv):
    del argv
    data = mmlu.load(FLAGS.data, FLAGS.split)
    record, rows = mmlu.evaluate(make_backend(FLAGS), data, k=FLAGS.k, subjects=FLAGS.subjects,
                                 limit_per_subject=FLAGS.limit_per_subject)
    return cli.conclude(FLAGS, record, rows, rejects=data.rejects)


if __name__ == "__main__":
    app.run(main)
