"""Tables (Markdown, HTML) and plots (PNG) from results JSON files.

  python eval/report.py --results=results/ --out_dir=report/
"""

import os

from absl import app, flags

from easylm_imitate.evaluation import report
from easylm_imitate.evaluation.results import is_failed

flags.DEFINE_list("results", None, "Results JSON files or directories (searched recursively).", required=True)
flags.DEFINE_string("out_dir", None, "Where report.md, report.html and plots/ are written.", required=True)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    written = report.build_report(FLAGS.results, FLAGS.out_dir)
    failed = sum(is_failed(r) for r in written.results)
    print(f"{len(written.results)} results ({failed} failed, {len(written.rejects)} skipped) -> "
          + ", ".join(os.path.join(FLAGS.out_dir, f) for f in written.files))


if __name__ == "__main__":
    app.run(main)
