"""Every key a training config may set, with its default. Config files in `configs/` start
from `default_config()` and change what they need; the trainer locks the result, so a
misspelled key on the command line (`--config.lerning_rate=...`) is an error."""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """The full set of training options with defaults."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.batch_size = 8  # global rows per optimizer step (all hosts together)
    c.seq_length = 512
    c.total_steps = 0  # 0: one epoch over the packed training rows
    c.grad_accum_steps = 1
    c.learning_rate = 2e-5
    c.save_every_steps = 500
    c.keep_checkpoints = 3  # newest steps kept, plus the newest step known good (never rotated away)
    c.nonfinite = "stop"  # NaN/inf loss or gradient norm: stop (raise, save nothing) | skip (keep old state, count it)
    c.log_every_steps = 10
    c.eval_every_steps = 0  # 0: only at the end (when data.eval_file is set)
    c.eval_max_rows = 0  # evaluate on the first N packed rows of data.eval_file; 0: all of them
    c.init_from = ""  # converted checkpoint or training run to start from (parameters only)
    c.tokenizer = ""  # tokenizer directory; default: the one of init_from
    c.mesh = "dp:1,fsdp:-1,tp:1"
    c.sharding_rules = "fsdp_tp"
    # MFU's denominator. 0: from the device table; CPU: a matmul peak measured once per machine
    # and cached in ~/.cache/easylm_imitate/peak_flops.json (see train/peak_flops.py)
    c.peak_flops_per_device = 0.0
    c.tensorboard = True
    # CPU backend on glibc: keep freed memory in the process so each step's temporary buffers
    # are reused, not page-faulted in afresh (~10% of a CPU step; see train/host_memory.py).
    c.reuse_host_memory = True

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny-llama"  # ignored when init_from gives the model
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    c.model.remat = "none"  # none | full | save_dots | save_dots_no_batch
    c.model.attention = "xla"  # xla | dot_product | cudnn | splash | auto (models/attention.py)

    c.data = ml_collections.ConfigDict()
    c.data.train_file = ""
    c.data.eval_file = ""
    c.data.template = "paper"  # paper | chatml | tokenizer

    # Distillation from the target's log-probabilities (records' meta.target_logprobs, collected
    # with --top_logprobs=K; the target must use the student's tokenizer): adds
    # alpha x KL(target top-K renormalised || student on those K ids) on the loss-mask tokens
    # to the loss (see train/distill.py); metrics gain distill_kl.
    c.distill = ml_collections.ConfigDict()
    c.distill.alpha = 0.0  # 0: off
    c.distill.top_k = 5  # target alternatives used per token (1-20; fewer where a record has fewer)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # adamw | adafactor_scaled (alias palm)
    c.optimizer.learning_rate = c.get_ref("learning_rate")
    c.optimizer.warmup_steps = 0
    c.optimizer.schedule = "constant"  # constant | cosine | linear (after warm-up)
    c.optimizer.end_lr_ratio = 0.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.95
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.0
    c.optimizer.clip_grad_norm = 1.0

    # LoRA / QLoRA (docs/lora.md): rank > 0 trains low-rank adapters on the projections of the
    # frozen init_from model instead of every parameter.
    c.lora = ml_collections.ConfigDict()
    c.lora.rank = 0  # 0: full fine-tuning
    c.lora.alpha = 16.0  # the adapter update is scaled by alpha / rank
    c.lora.dropout = 0.0  # dropout on each adapter's input while training (peft's lora_dropout)
    c.lora.targets = "q|k|v|o|gate|up|down"  # regex fully matching projection names (or paths like blocks/wq)
    c.lora.init = "gaussian"  # A: gaussian (std 1/rank) | kaiming_uniform; B starts at zero
    c.lora.base_dtype = "float32"  # frozen base kept as: float32 | bfloat16 | int8 | nf4 (QLoRA)

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    return c
