"""easylm_imitate: model imitation studies in JAX/Flax."""

__version__ = "0.1.0"
