"""Model conversion: Hugging Face (safetensors) <-> parameter checkpoint, GGUF -> checkpoint.

Library entry points: `hf_dir_to_checkpoint`, `checkpoint_to_hf_dir`, `gguf_to_checkpoint`;
tensor-level mapping in `hf_weights` (`params_from_hf`, `params_to_hf`, `from_torch_model`).
"""

from easylm_imitate.convert.hf_config import ConversionError, config_from_hf, config_to_hf

__all__ = ["ConversionError", "config_from_hf", "config_to_hf"]
