"""Training config of the tests' tiny experiment: a few steps of a tiny LLaMA on CPU."""

from easylm_imitate.train.config_defaults import default_config


def get_config():
    """Tiny fine-tune: batch 4 x 64 tokens, checkpoints every 5 steps."""
    c = default_config()
    c.batch_size = 4
    c.seq_length = 64
    c.total_steps = 30
    c.learning_rate = 1e-3
    c.save_every_steps = 5
    c.keep_checkpoints = 2
    c.log_every_steps = 5
    c.tensorboard = False
    return c
