"""Settings the paper's imitation fine-tunes share (Gudibande et al. 2023, section on training).

One epoch over 2048-token blocks of conversations with loss only on the target's replies;
the paper's optimizer ("AdamW with gradients re-scaled by the magnitude of each weight",
EasyLM's non-factored Adafactor with parameter-scale updates), learning rate 2e-3, 1000
linear warm-up steps from 0, batch 32. What the paper leaves unsaid is set as in the closely
related trainer it cites: constant rate after warm-up, weight decay 1e-3 on matrices only.
"""

from easylm_imitate.train.config_defaults import default_config


def imitation_config(preset: str, mesh: str, remat: str):
    """The protocol's fine-tuning config for one base model (fill in data and init_from)."""
    c = default_config()
    c.model.preset = preset
    c.model.dtype = "bfloat16"
    c.model.remat = remat
    c.model.attention = "auto"  # splash on TPU, cudnn on GPU (bfloat16), xla on CPU
    c.data.template = "paper"
    c.data.train_file = ""  # required: canonical JSONL from easylm_imitate.data.build
    c.init_from = ""  # required: a converted base model (easylm_imitate.convert.hf_to_checkpoint)
    c.seq_length = 2048
    c.batch_size = 32
    c.total_steps = 0  # one epoch
    c.learning_rate = 2e-3
    c.optimizer.name = "adafactor_scaled"
    c.optimizer.warmup_steps = 1000
    c.optimizer.schedule = "constant"
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.8
    c.optimizer.weight_decay = 1e-3
    c.optimizer.clip_grad_norm = 1.0
    c.mesh = mesh
    c.sharding_rules = "fsdp_tp"
    c.save_every_steps = 500
    c.keep_checkpoints = 2
    c.log_every_steps = 10
    c.eval_every_steps = 500
    return c
