"""Checkpoints on disk: parameter-only checkpoints (converted models, exports) and the
Orbax CheckpointManager layout of training runs.

Parameter checkpoint (what converters write and `easylm_imitate.load` reads)::

    DIR/meta.json     {"format": "easylm_imitate.params", "model": {...ModelConfig...}, ...}
    DIR/params/       Orbax PyTree of the model's parameters (stacked-layer layout)
    DIR/tokenizer/    Hugging Face tokenizer files (optional)

Training run (what the trainer writes)::

    WORKDIR/checkpoints/<step>/{state,data,meta}   Orbax CheckpointManager items
    WORKDIR/tokenizer/, WORKDIR/config.json, WORKDIR/run_info.json
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from easylm_imitate.fileio import write_json_atomic
from easylm_imitate.models.config import ModelConfig

PARAMS_FORMAT = "easylm_imitate.params"
META_FILE = "meta.json"


class CheckpointError(RuntimeError):
    """A checkpoint directory that is missing, incomplete or of an unknown kind."""


def save_params(path: str | os.PathLike, cfg: ModelConfig, params: Mapping, tokenizer=None,
                extra_meta: Mapping | None = None) -> str:
    """Write a parameter checkpoint atomically: it appears at `path` only when complete.

    `params` is the model's pure parameter dict (arrays may be sharded). `tokenizer` is a
    Hugging Face tokenizer (saved with save_pretrained) or a directory to copy.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(os.path.join(path, META_FILE)):
        raise CheckpointError(f"{path}: a checkpoint already exists there (remove it first)")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".partial-", dir=parent)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, "params"), params)
            ckptr.wait_until_finished()
        if tokenizer is not None:
            tok_dir = os.path.join(tmp, "tokenizer")
            if isinstance(tokenizer, (str, os.PathLike)):
                shutil.copytree(tokenizer, tok_dir)
            else:
                tokenizer.save_pretrained(tok_dir)
        meta = {"format": PARAMS_FORMAT, "version": 1, "model": cfg.to_dict(), **dict(extra_meta or {})}
        write_json_atomic(os.path.join(tmp, META_FILE), meta)
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_meta(path: str | os.PathLike) -> dict:
    """The meta.json of a parameter checkpoint; CheckpointError if absent or foreign."""
    meta_path = os.path.join(os.fspath(path), META_FILE)
    if not os.path.isfile(meta_path):
        raise CheckpointError(f"{path}: not a checkpoint (no {META_FILE})")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != PARAMS_FORMAT:
        raise CheckpointError(f"{meta_path}: unknown checkpoint format {meta.get('format')!r}")
    return meta


def abstract_params(params_shape_tree, shardings=None, dtype=None):
    """ShapeDtypeStructs (with shardings when given) used as an Orbax restore target."""
    if shardings is None:
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype or a.dtype), params_shape_tree)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, dtype or a.dtype, sharding=s),
                        params_shape_tree, shardings)


def restore_params(path: str | os.PathLike, target) -> dict:
    """Restore the parameters of a parameter checkpoint onto `target` (abstract arrays with
    shardings, e.g. from `abstract_params`), so any mesh or device count works."""
    params_dir = os.path.join(os.path.abspath(os.fspath(path)), "params")
    if not os.path.isdir(params_dir):
        raise CheckpointError(f"{path}: no params/ directory")
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(params_dir, target)


def single_device_shardings(tree):
    """Shardings that put every leaf on the first local device (for host-side tools)."""
    device = jax.local_devices()[0]
    mesh = Mesh(np.asarray([device]).reshape(1, 1, 1), ("dp", "fsdp", "tp"))
    return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), tree)
