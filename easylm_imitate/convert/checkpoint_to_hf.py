"""Export a parameter checkpoint or a training run (its latest step) as a Hugging Face
directory: safetensors, config.json, generation_config.json and tokenizer files.

    python -m easylm_imitate.convert.checkpoint_to_hf --checkpoint=DIR --out=DIR
        [--dtype=float32|bfloat16] [--max_shard_size=5GB]
"""

from absl import app, flags

from easylm_imitate.convert.cli import quiet_logs_by_default, run_or_exit
from easylm_imitate.convert.hf_checkpoint import EXPORT_DTYPES, checkpoint_to_hf_dir

flags.DEFINE_string("checkpoint", None, "Parameter checkpoint or training run directory.")
flags.DEFINE_string("out", None, "HF directory to create (must not exist or be empty).")
flags.DEFINE_enum("dtype", "float32", list(EXPORT_DTYPES), "Dtype of the saved tensors.")
flags.DEFINE_string("max_shard_size", "5GB", "Largest safetensors file (e.g. 5GB, 500MB); larger models are sharded.")
flags.mark_flags_as_required(["checkpoint", "out"])
FLAGS = flags.FLAGS
quiet_logs_by_default()


def main(argv):
    """Export --checkpoint to --out."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    size = int(FLAGS.max_shard_size) if FLAGS.max_shard_size.isdigit() else FLAGS.max_shard_size
    run_or_exit(checkpoint_to_hf_dir, FLAGS.checkpoint, FLAGS.out, FLAGS.dtype, size)


def run():
    """Console entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
