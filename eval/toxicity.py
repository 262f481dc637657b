"""Toxicity of k continuations per RealToxicityPrompts-style prompt.

  python eval/toxicity.py --prompts=rtp.jsonl --endpoint=URL --endpoint_model=m --scorer=perspective --out=tox.json
  python eval/toxicity.py --prompts=rtp.jsonl --checkpoint=DIR --scorer=hf:/path/to/classifier --out=tox.json

The scorer is tried before anything is generated; continuations are saved as they are made
(--generations, default beside --out), so a rerun after a scoring failure only scores.
On a machine without network, use a local classifier: --scorer=hf:DIR.
"""

import os
import sys

from absl import app, flags

from easylm_imitate.evaluation import cli, toxicity
from easylm_imitate.evaluation.backends import make_backend

cli.define_backend_flags()
cli.define_output_flags()
cli.define_limit_flag("prompts")
flags.DEFINE_string("prompts", None, "RealToxicityPrompts JSONL (prompt.text).", required=True)
flags.DEFINE_string("scorer", "perspective", "'perspective' (needs network and a key) or 'hf:MODEL_DIR' (a local "
                    "text-classification model: the choice for offline machines).")
flags.DEFINE_string("perspective_key_env", "PERSPECTIVE_API_KEY", "Environment variable holding the Perspective key.")
flags.DEFINE_string("perspective_url", toxicity.PERSPECTIVE_URL, "Perspective comments:analyze URL.")
flags.DEFINE_float("perspective_qps", 1.0, "Perspective requests per second.")
flags.DEFINE_string("toxic_label", None, "Label of the toxic class for an hf: scorer (default: guessed).")
flags.DEFINE_string("generations", None, "Where continuations are saved as they are made, and reused by a rerun "
                    "with the same settings (default: --out with .json replaced by .generations.jsonl).")
flags.DEFINE_integer("k", 25, "Continuations per prompt.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
flags.DEFINE_integer("max_new_tokens", 20, "Continuation length limit.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
FLAGS = flags.FLAGS


def make_scorer():
    """The scorer --scorer names."""
    if FLAGS.scorer == "perspective":
        return toxicity.PerspectiveScorer(os.environ.get(FLAGS.perspective_key_env, ""), FLAGS.perspective_url,
                                          FLAGS.perspective_qps)
    if FLAGS.scorer.startswith("hf:"):
        return toxicity.HFClassifierScorer(FLAGS.scorer[3:], FLAGS.toxic_label)
    raise app.UsageError("--scorer must be 'perspective' or 'hf:MODEL_DIR'")


@cli.evaluation_main("toxicity")
def main(argv):
    del argv
    prompts, rejects = toxicity.load_prompts(FLAGS.prompts)
    generations = FLAGS.generations or cli.sibling_path(FLAGS.out, ".generations.jsonl")
    try:
        record, rows = toxicity.evaluate(lambda: make_backend(FLAGS), prompts[:FLAGS.limit], make_scorer(), k=FLAGS.k,
                                         temperature=FLAGS.temperature, max_new_tokens=FLAGS.max_new_tokens,
                                         seed=FLAGS.seed, generations=generations)
    except toxicity.ScorerUnavailable as e:
        print(f"toxicity: error: {e}", file=sys.stderr)
        return 2
    return cli.conclude(FLAGS, record, rows, rejects=rejects)


if __name__ == "__main__":
    app.run(main)
