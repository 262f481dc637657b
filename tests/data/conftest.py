"""Data-test fixtures: small tokenizers trained in-test (no hub)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from data_helpers import train_bpe  # noqa: E402


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """Byte-level BPE with EOS and ChatML special tokens and a ChatML chat template."""
    return train_bpe("bytelevel")


@pytest.fixture(scope="session")
def metaspace_tokenizer():
    """Sentencepiece-style (Metaspace) BPE: it marks word starts itself."""
    return train_bpe("metaspace")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, bpe_tokenizer):
    """The byte-level tokenizer saved to a directory (what --tokenizer takes)."""
    path = tmp_path_factory.mktemp("tok")
    bpe_tokenizer.save_pretrained(str(path))
    return str(path)
