"""Toxicity of k continuations per RealToxicityPrompts-style prompt.

  python eval/toxicity.py --prompts=rtp.jsonl --endpoint=URL --endpoint_model=m --scorer=perspective --out=tox.json
  python eval/toxicity.py --prompts=rtp.jsonl --checkpoint=DIR --scorer=hf:/path/to/classifier --out=tox.json
"""

import os

from absl import app, flags

from easylm_imitate.evaluation import cli, toxicity
from easylm_imitate.evaluation.backends import make_backend

cli.define_backend_flags()
cli.define_output_flags()
flags.DEFINE_string("prompts", None, "RealToxicityPrompts JSONL (prompt.text).", required=True)
flags.DEFINE_string("scorer", "perspective", "'perspective' or 'hf:MODEL_DIR' (a text-classification model).")
flags.DEFINE_string("perspective_key_env", "PERSPECTIVE_API_KEY", "Environment variable holding the Perspective key.")
flags.DEFINE_string("perspective_url", toxicity.PERSPECTIVE_URL, "Perspective comments:analyze URL.")
flags.DEFINE_float("perspective_qps", 1.0, "Perspective requests per second.")
flags.DEFINE_string("toxic_label", None, "Label of the toxic class for an hf: scorer (default: guessed).")
flags.DEFINE_integer("k", 25, "Continuations per prompt.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
flags.DEFINE_integer("max_new_tokens", 20, "Continuation length limit.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_integer("limit", None, "Only the first N prompts.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    prompts, rejects = toxicity.load_prompts(FLAGS.prompts)
    if FLAGS.scorer == "perspective":
        scorer = toxicity.PerspectiveScorer(os.environ.get(FLAGS.perspective_key_env, ""), FLAGS.perspective_url,
                                            FLAGS.perspective_qps)
    elif FLAGS.scorer.startswith("hf:"):
        scorer = toxicity.HFClassifierScorer(FLAGS.scorer[3:], FLAGS.toxic_label)
    else:
        raise app.UsageError("--scorer must be 'perspective' or 'hf:MODEL_DIR'")
    record, rows = toxicity.evaluate(make_backend(FLAGS), prompts[:FLAGS.limit], scorer, k=FLAGS.k,
                                     temperature=FLAGS.temperature, max_new_tokens=FLAGS.max_new_tokens,
                                     seed=FLAGS.seed)
    cli.finish(record, rows, rejects=rejects, **cli.output_kwargs(FLAGS))


if __name__ == "__main__":
    app.run(main)
