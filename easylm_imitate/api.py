"""`load`: one call from a checkpoint directory to a ready model and its tokenizer."""

from __future__ import annotations

import os

from flax import nnx
from jax.sharding import Mesh

from easylm_imitate import checkpoint, parallel
from easylm_imitate.models import DecoderLM, ModelConfig, build_model


def abstract_model(cfg: ModelConfig, mesh: Mesh | None = None, rules: str = "fsdp_tp"):
    """(graphdef, abstract parameter state) of a model, without allocating it; the graphdef
    holds `rules` on `mesh` when a mesh is given."""
    return nnx.split(parallel.attach_rules(nnx.eval_shape(lambda: build_model(cfg)), mesh, rules))


def model_from_params(cfg: ModelConfig, restore_fn, mesh: Mesh | None = None,
                      rules: str = "fsdp_tp") -> DecoderLM:
    """Build a model whose parameters come from `restore_fn(abstract_target) -> pure dict`.
    With `mesh` the model also holds `rules` (see `parallel.attach_rules`): the sampler,
    scorer and any jitted call of it then constrain its layers as training does."""
    graphdef, abstract_state = abstract_model(cfg, mesh, rules)
    if mesh is None:
        shardings = checkpoint.single_device_shardings(abstract_state)
    else:
        shardings = parallel.state_shardings(abstract_state, mesh, rules)
    target = checkpoint.abstract_params(abstract_state.to_pure_dict(), _pure(shardings))
    params = restore_fn(target)
    abstract_state.replace_by_pure_dict(params)
    return nnx.merge(graphdef, abstract_state)


def _pure(tree):
    """Pure dict of a State of shardings."""
    return tree.to_pure_dict() if hasattr(tree, "to_pure_dict") else tree


def load_tokenizer(directory: str | os.PathLike):
    """The Hugging Face tokenizer saved in `directory`/tokenizer, or None if there is none."""
    tok_dir = os.path.join(os.fspath(directory), "tokenizer")
    if not os.path.isdir(tok_dir):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


def load(path: str | os.PathLike, mesh: Mesh | None = None, rules: str = "fsdp_tp",
         **config_overrides) -> tuple[DecoderLM, object]:
    """Load `(model, tokenizer)` from a converted checkpoint or a training run directory.

    A training run loads its latest checkpoint's parameters. `config_overrides` change
    runtime fields such as `dtype='bfloat16'` or `attention='dot_product'`. With `mesh`
    the parameters are restored sharded by `rules`; without, onto one device.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise checkpoint.CheckpointError(f"{path}: no such checkpoint directory")
    if os.path.isfile(os.path.join(path, checkpoint.META_FILE)):
        meta = checkpoint.read_meta(path)
        cfg = ModelConfig.from_dict(meta["model"]).replace(**config_overrides)
        model = model_from_params(cfg, lambda target: checkpoint.restore_params(path, target), mesh, rules)
        return model, load_tokenizer(path)
    from easylm_imitate.train import run_checkpoint

    if run_checkpoint.is_run_dir(path):
        return run_checkpoint.load_latest(path, mesh=mesh, rules=rules, **config_overrides)
    raise checkpoint.CheckpointError(
        f"{path}: neither a converted checkpoint (meta.json) nor a training run (checkpoints/)")
