"""Tiny random-init LLaMA on the conversations shipped with the package: checks an install
in well under a minute on CPU. `python -m easylm_imitate.train --config=configs/smoke.py --workdir=/tmp/smoke`"""

from easylm_imitate.assets import asset_path
from easylm_imitate.train.config_defaults import default_config


def get_config():
    """Smoke-test training config."""
    c = default_config()
    c.model.preset = "tiny-llama"
    c.tokenizer = asset_path("tiny_tokenizer")
    c.data.train_file = asset_path("smoke_conversations.jsonl")
    c.data.eval_file = asset_path("smoke_conversations_eval.jsonl")
    c.data.template = "paper"
    c.batch_size = 8
    c.seq_length = 128
    c.total_steps = 60
    c.learning_rate = 3e-3
    c.optimizer.warmup_steps = 10
    c.optimizer.schedule = "cosine"
    c.optimizer.end_lr_ratio = 0.1
    c.optimizer.weight_decay = 0.01
    c.save_every_steps = 20
    c.log_every_steps = 5
    c.eval_every_steps = 30
    return c
