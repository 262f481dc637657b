"""LLaMA 7B imitation fine-tune with the paper's hyperparameters.

python -m easylm_imitate.train --config=configs/llama_7b_imitation.py --workdir=/mnt/bucket/runs/llama_7b_imitation \\
    --config.init_from=/mnt/bucket/checkpoints/llama-7b --config.data.train_file=/mnt/bucket/data/train.jsonl
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imitation_common import imitation_config  # noqa: E402


def get_config():
    """LLaMA 7B on ShareGPT-Mix or NQ-synthetic (set data.train_file)."""
    return imitation_config("llama-7b", "dp:1,fsdp:-1,tp:1", "full")
