#!/usr/bin/env bash
# Runs ON a TPU worker (setup.sh sends it): create .venv beside the code with the given
# Python (default 3.11; TPU VM images ship 3.10) and install easylm_imitate[tpu] into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py_version="${1:-3.11}"
export PATH="$HOME/.local/bin:$PATH"
# uv fetches a Python build when the image lacks the version; pip is its fallback installer.
if ! command -v uv >/dev/null; then
  python3 -m pip install --user --quiet uv || curl -LsSf https://astral.sh/uv/install.sh | sh
fi
uv venv --allow-existing --python "$py_version" .venv
uv pip install --python .venv/bin/python --quiet -e ".[tpu]"
.venv/bin/python -c 'import jax, easylm_imitate; print(f"{jax.__version__=} local devices: {jax.local_device_count()}")'
