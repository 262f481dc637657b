"""Convert a LLaMA-family GGUF file (dequantized to float32) into a parameter checkpoint,
with its tokenizer and chat template.

    python -m easylm_imitate.convert.gguf_to_checkpoint --gguf=PATH|smollm2-135m-instruct --out=DIR
"""

from absl import flags

from easylm_imitate.convert.cli import converter
from easylm_imitate.convert.gguf_file import SHIPPED, gguf_to_checkpoint, resolve_gguf

flags.DEFINE_string("gguf", None, f"GGUF file path, or a shipped model name: {', '.join(SHIPPED)}.")
flags.DEFINE_string("out", None, "Checkpoint directory to create (must not exist or be empty).")
# main converts --gguf into a checkpoint at --out.
main, run = converter(lambda f: gguf_to_checkpoint(resolve_gguf(f.gguf, "--gguf"), f.out), required=["gguf", "out"])

if __name__ == "__main__":
    run()
