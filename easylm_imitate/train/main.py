"""`python -m easylm_imitate.train --config=configs/FILE.py --workdir=DIR [--config.key=value ...]`

Fine-tunes a model on canonical conversation JSONL. Rerunning the same command resumes from
the run's latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, TensorBoard, config.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    """Train with the parsed config."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO
    from easylm_imitate.train.trainer import train

    result = train(_CONFIG.value, _WORKDIR.value)
    if result.interrupted:
        raise SystemExit(143)


def run():
    """Console entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
