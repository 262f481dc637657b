"""Reading and writing the safetensors files of a Hugging Face `save_pretrained` directory.

Reading is lazy (one tensor at a time through `safe_open`), single-file
(`model.safetensors`) or sharded (`model.safetensors.index.json`). Writing shards above a
size limit and writes the index the way `save_pretrained` does.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from easylm_imitate.convert.hf_config import ConversionError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class SafetensorsReader:
    """Tensors of a HF model directory by name, opened lazily; use as a context manager.

    Every file's header is validated on open, so a truncated or corrupt file fails before
    any conversion work is done.
    """

    def __init__(self, hf_dir: str | os.PathLike):
        self.hf_dir = os.fspath(hf_dir)
        self._stack = contextlib.ExitStack()
        self._where: dict[str, str] = {}  # tensor name -> file
        self._handles: dict[str, object] = {}
        index_path = os.path.join(self.hf_dir, INDEX_FILE)
        single = os.path.join(self.hf_dir, SINGLE_FILE)
        if os.path.isfile(index_path):
            try:
                with open(index_path, encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConversionError(f"{index_path}: not a safetensors index ({e})") from None
            files = sorted(set(weight_map.values()))
        elif os.path.isfile(single):
            weight_map, files = None, [SINGLE_FILE]
        else:
            found = sorted(n for n in os.listdir(self.hf_dir) if n.endswith((".bin", ".pt", ".h5", ".msgpack")))
            hint = f" (found {', '.join(found)}; re-save with safe_serialization=True)" if found else ""
            raise ConversionError(f"{self.hf_dir}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
        try:
            for name in files:
                handle = self._open(name)
                for key in handle.keys():
                    if weight_map is None or weight_map.get(key) == name:
                        self._where[key] = name
        except BaseException:
            self.close()
            raise
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(self._where))
            if missing:
                raise ConversionError(f"{index_path}: tensor {missing[0]} is not in {weight_map[missing[0]]}")

    def _open(self, name: str):
        path = os.path.join(self.hf_dir, name)
        if not os.path.isfile(path):
            raise ConversionError(f"{path}: safetensors file listed in the index is missing")
        try:
            handle = self._stack.enter_context(safe_open(path, framework="numpy"))
        except (SafetensorError, OSError) as e:
            raise ConversionError(f"{path}: not a valid safetensors file (truncated or corrupt: {e})") from None
        self._handles[name] = handle
        return handle

    def keys(self) -> list[str]:
        """Every tensor name in the directory."""
        return sorted(self._where)

    def get_tensor(self, name: str) -> np.ndarray:
        """One tensor as a numpy array (bfloat16 arrives as ml_dtypes.bfloat16); KeyError if absent."""
        file = self._where[name]
        try:
            return self._handles[file].get_tensor(name)
        except SafetensorError as e:
            raise ConversionError(f"{os.path.join(self.hf_dir, file)}: cannot read tensor {name} ({e})") from None

    def close(self) -> None:
        """Close every open file."""
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_safetensors(out_dir: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      max_shard_size: int | str = "5GB") -> list[str]:
    """Write `tensors` as `model.safetensors`, or as shards plus `model.safetensors.index.json`
    when they exceed `max_shard_size` (bytes, or a string such as '5GB'). Returns the files."""
    from huggingface_hub import split_state_dict_into_shards_factory

    split = split_state_dict_into_shards_factory(
        dict(tensors), get_storage_size=lambda a: a.nbytes, filename_pattern="model{suffix}.safetensors",
        max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        shard = {n: np.ascontiguousarray(tensors[n]) for n in names}
        safetensors.numpy.save_file(shard, os.path.join(out_dir, filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())},
                 "weight_map": dict(sorted(split.tensor_to_filename.items()))}
        with open(os.path.join(out_dir, INDEX_FILE), "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2)
    return sorted(split.filename_to_tensors)
