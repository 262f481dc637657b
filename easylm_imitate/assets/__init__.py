"""Small files shipped with the package: NQ-synthetic seeds, a smoke-test tokenizer and
conversations."""

import os

ASSET_DIR = os.path.dirname(os.path.abspath(__file__))


def asset_path(name: str) -> str:
    """Absolute path of a shipped asset; FileNotFoundError names it if absent."""
    path = os.path.join(ASSET_DIR, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"packaged asset missing: {path}")
    return path
