"""GPT-2 XL (1.5B) imitation fine-tune with the paper's hyperparameters.

python -m easylm_imitate.train --config=configs/gpt2_xl_imitation.py --workdir=/mnt/bucket/runs/gpt2_xl_imitation \\
    --config.init_from=/mnt/bucket/checkpoints/gpt2-xl --config.data.train_file=/mnt/bucket/data/train.jsonl
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imitation_common import imitation_config  # noqa: E402


def get_config():
    """GPT-2 XL (1.5B) on ShareGPT-Mix or NQ-synthetic (set data.train_file)."""
    return imitation_config("gpt2-xl", "dp:1,fsdp:-1,tp:1", "full")
