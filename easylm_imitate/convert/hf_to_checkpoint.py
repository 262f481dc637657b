"""Convert a local Hugging Face model directory (LLaMA family or GPT-2, safetensors) into a
parameter checkpoint that `easylm_imitate.load` reads.

    python -m easylm_imitate.convert.hf_to_checkpoint --hf_dir=DIR --out=DIR
"""

from absl import flags

from easylm_imitate.convert.cli import converter
from easylm_imitate.convert.hf_checkpoint import hf_dir_to_checkpoint

flags.DEFINE_string("hf_dir", None, "Local save_pretrained directory (config.json + safetensors).")
flags.DEFINE_string("out", None, "Checkpoint directory to create (must not exist or be empty).")
# main converts --hf_dir into a checkpoint at --out.
main, run = converter(lambda f: hf_dir_to_checkpoint(f.hf_dir, f.out), required=["hf_dir", "out"])

if __name__ == "__main__":
    run()
