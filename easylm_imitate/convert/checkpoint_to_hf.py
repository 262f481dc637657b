"""Export a parameter checkpoint or a training run (its latest step) as a Hugging Face
directory: safetensors, config.json, generation_config.json and tokenizer files.

    python -m easylm_imitate.convert.checkpoint_to_hf --checkpoint=DIR --out=DIR
        [--dtype=float32|bfloat16] [--max_shard_size=5GB]
"""

from absl import flags

from easylm_imitate.convert.cli import converter
from easylm_imitate.convert.hf_checkpoint import EXPORT_DTYPES, checkpoint_to_hf_dir

flags.DEFINE_string("checkpoint", None, "Parameter checkpoint or training run directory.")
flags.DEFINE_string("out", None, "HF directory to create (must not exist or be empty).")
flags.DEFINE_enum("dtype", "float32", list(EXPORT_DTYPES), "Dtype of the saved tensors.")
flags.DEFINE_string("max_shard_size", "5GB", "Largest safetensors file (e.g. 5GB, 500MB); larger models are sharded.")


def export(f):
    """Export --checkpoint to --out."""
    size = int(f.max_shard_size) if f.max_shard_size.isdigit() else f.max_shard_size
    return checkpoint_to_hf_dir(f.checkpoint, f.out, f.dtype, size)


main, run = converter(export, required=["checkpoint", "out"])

if __name__ == "__main__":
    run()
