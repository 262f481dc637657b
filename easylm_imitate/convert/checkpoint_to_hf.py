"""Export a parameter checkpoint or a training run (its latest step) as a Hugging Face
directory: safetensors, config.json, generation_config.json and tokenizer files.

    python -m easylm_imitate.convert.checkpoint_to_hf --checkpoint=DIR --out=DIR
        [--dtype=float32|bfloat16] [--max_shard_size=5GB] [--merge_lora | --peft]

A LoRA run (config.lora.rank > 0) exports either merged into its base as a plain HF model
(--merge_lora) or as a peft adapter directory for the HF base (--peft; see peft_export).
"""

from absl import flags

from easylm_imitate.convert.cli import converter
from easylm_imitate.convert.hf_checkpoint import EXPORT_DTYPES, checkpoint_to_hf_dir
from easylm_imitate.convert.hf_config import ConversionError
from easylm_imitate.convert.peft_export import export_peft
from easylm_imitate.lora.load import is_lora_run

flags.DEFINE_string("checkpoint", None, "Parameter checkpoint or training run directory.")
flags.DEFINE_string("out", None, "HF directory to create (must not exist or be empty).")
flags.DEFINE_enum("dtype", "float32", list(EXPORT_DTYPES), "Dtype of the saved tensors.")
flags.DEFINE_string("max_shard_size", "5GB", "Largest safetensors file (e.g. 5GB, 500MB); larger models are sharded.")
flags.DEFINE_bool("merge_lora", False, "LoRA run: write the base with the adapters merged in, as a plain HF model.")
flags.DEFINE_bool("peft", False, "LoRA run: write adapter_config.json + adapter_model.safetensors for peft "
                  "(loaded onto the HF export of the run's base).")


def export(f):
    """Export --checkpoint to --out."""
    size = int(f.max_shard_size) if f.max_shard_size.isdigit() else f.max_shard_size
    lora_run = is_lora_run(f.checkpoint)
    if (f.merge_lora or f.peft) and not lora_run:
        raise ConversionError(f"{f.checkpoint}: --merge_lora/--peft need a LoRA training run")
    if f.merge_lora and f.peft:
        raise ConversionError("--merge_lora and --peft: choose one")
    if f.peft:
        return export_peft(f.checkpoint, f.out)
    if lora_run and not f.merge_lora:
        raise ConversionError(f"{f.checkpoint} is a LoRA run: pass --merge_lora (a plain HF model) or --peft "
                              "(adapter files for its base)")
    return checkpoint_to_hf_dir(f.checkpoint, f.out, f.dtype, size)


main, run = converter(export, required=["checkpoint", "out"])

if __name__ == "__main__":
    run()
