"""Test-wide setup: 8 fake CPU devices before JAX is imported anywhere."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Machine-wide caches (the measured CPU peak) go to a throwaway folder, never the user's home.
if "EASYLM_IMITATE_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["EASYLM_IMITATE_CACHE_DIR"] = tempfile.mkdtemp(prefix="easylm_imitate_cache_")
