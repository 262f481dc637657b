"""Convert a local Hugging Face model directory (LLaMA family or GPT-2, safetensors) into a
parameter checkpoint that `easylm_imitate.load` reads.

    python -m easylm_imitate.convert.hf_to_checkpoint --hf_dir=DIR --out=DIR
"""

from absl import app, flags

from easylm_imitate.convert.cli import quiet_logs_by_default, run_or_exit
from easylm_imitate.convert.hf_checkpoint import hf_dir_to_checkpoint

flags.DEFINE_string("hf_dir", None, "Local save_pretrained directory (config.json + safetensors).")
flags.DEFINE_string("out", None, "Checkpoint directory to create (must not exist or be empty).")
flags.mark_flags_as_required(["hf_dir", "out"])
FLAGS = flags.FLAGS
quiet_logs_by_default()


def main(argv):
    """Convert --hf_dir into a checkpoint at --out."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run_or_exit(hf_dir_to_checkpoint, FLAGS.hf_dir, FLAGS.out)


def run():
    """Console entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
