"""Tables (Markdown, HTML) and plots (PNG) from results JSON files, or the experiment report.

  python eval/report.py --results=results/ --out_dir=report/
  python eval/report.py --experiment=DIR --out_dir=REPORT   # one self-contained report.html + PNGs
"""

import os

from absl import app, flags

from easylm_imitate.evaluation import report, report_html
from easylm_imitate.evaluation.results import is_failed

flags.DEFINE_list("results", None, "Results JSON files or directories (searched recursively).")
flags.DEFINE_string("experiment", None, "An experiment directory (python -m easylm_imitate.experiment --workdir): "
                    "report every finished cell with bootstrap intervals (see docs/evaluation.md).")
flags.DEFINE_string("out_dir", None, "Where the report and plots/ are written.", required=True)
flags.DEFINE_integer("n_boot", 1000, "Bootstrap resamples per point (with --experiment).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if bool(FLAGS.results) == bool(FLAGS.experiment):
        raise app.UsageError("give exactly one of --results and --experiment")
    try:
        if FLAGS.experiment:
            written = report_html.build_experiment_report(FLAGS.experiment, FLAGS.out_dir, FLAGS.n_boot)
        else:
            written = report.build_report(FLAGS.results, FLAGS.out_dir)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    failed = sum(is_failed(r) for r in written.results)
    print(f"{len(written.results)} results ({failed} failed, {len(written.rejects)} skipped) -> "
          + ", ".join(os.path.join(FLAGS.out_dir, f) for f in written.files))


if __name__ == "__main__":
    app.run(main)
