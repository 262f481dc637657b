"""easylm_imitate: model imitation studies in JAX/Flax.

The public entry point is `load(path)`, which returns `(model, tokenizer)` for a converted
checkpoint or a training run; `model(input_ids)` returns float32 logits [batch, seq, vocab].
"""

__version__ = "0.1.0"


def load(path, mesh=None, rules="fsdp_tp", **config_overrides):
    """Load `(model, tokenizer)` from a checkpoint directory (see `easylm_imitate.api.load`)."""
    from easylm_imitate.api import load as _load

    return _load(path, mesh=mesh, rules=rules, **config_overrides)


__all__ = ["__version__", "load"]
