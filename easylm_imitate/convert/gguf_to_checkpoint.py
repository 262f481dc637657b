"""Convert a LLaMA-family GGUF file (dequantized to float32) into a parameter checkpoint,
with its tokenizer and chat template.

    python -m easylm_imitate.convert.gguf_to_checkpoint --gguf=PATH|smollm2-135m-instruct --out=DIR
"""

from absl import app, flags

from easylm_imitate.convert.cli import quiet_logs_by_default, run_or_exit
from easylm_imitate.convert.gguf_file import SHIPPED, gguf_to_checkpoint

flags.DEFINE_string("gguf", None, f"GGUF file path, or a shipped model name: {', '.join(SHIPPED)}.")
flags.DEFINE_string("out", None, "Checkpoint directory to create (must not exist or be empty).")
flags.mark_flags_as_required(["gguf", "out"])
FLAGS = flags.FLAGS
quiet_logs_by_default()


def main(argv):
    """Convert --gguf into a checkpoint at --out."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run_or_exit(gguf_to_checkpoint, FLAGS.gguf, FLAGS.out)


def run():
    """Console entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
