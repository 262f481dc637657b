"""LoRA and QLoRA fine-tuning: adapters on the model's projections over a frozen (optionally
quantised) base; see docs/lora.md."""
