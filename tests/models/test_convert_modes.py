"""Converter outputs get the modes the umask gives (like training checkpoints), not the
0700/0600 of their staging files."""

import os
import stat

import pytest
from models.hf_helpers import random_hf_model, save_hf_dir

from easylm_imitate.convert.hf_checkpoint import checkpoint_to_hf_dir, hf_dir_to_checkpoint


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return save_hf_dir(random_hf_model("tiny-llama", seed=3), tmp_path_factory.mktemp("hf") / "hf")


def _modes(root: str) -> dict[str, set[int]]:
    """{'dir': modes of directories, 'file': modes of files} under and including `root`."""
    out = {"dir": {stat.S_IMODE(os.stat(root).st_mode)}, "file": set()}
    for dirpath, dirnames, filenames in os.walk(root):
        out["dir"] |= {stat.S_IMODE(os.stat(os.path.join(dirpath, d)).st_mode) for d in dirnames}
        out["file"] |= {stat.S_IMODE(os.stat(os.path.join(dirpath, f)).st_mode) for f in filenames}
    return out


@pytest.mark.parametrize("umask, dirs, files", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_outputs_follow_the_umask(hf_dir, tmp_path, umask, dirs, files):
    old = os.umask(umask)
    try:
        ckpt = hf_dir_to_checkpoint(hf_dir, tmp_path / "ckpt")
        exported = checkpoint_to_hf_dir(ckpt, tmp_path / "export")
    finally:
        os.umask(old)
    for root in (ckpt, exported):
        assert _modes(root) == {"dir": {dirs}, "file": {files}}, root
    assert os.path.isfile(os.path.join(exported, "model.safetensors"))
