#!/usr/bin/env bash
# Copy the code to every worker and install it with the TPU extra.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/ops.sh
source "$SCRIPTS_DIR/lib/ops.sh"

usage() {
  cat <<HELP
Usage: tpu_scripts/setup.sh [--env FILE] [--dry-run]

On every worker of TPU_NAME (--worker=all): put the code in ~/REMOTE_DIR (a copy of
this checkout, or CODE_REPO at CODE_COMMIT), then create ~/REMOTE_DIR/.venv with
Python SETUP_PYTHON and install easylm_imitate[tpu] into it (pip install -e ".[tpu]").

Needs: TPU_PROJECT TPU_ZONE TPU_NAME
Optional: REMOTE_DIR (default easylm_imitate) CODE_REPO CODE_COMMIT (default: local HEAD)
          SETUP_PYTHON (default 3.11) TPU_SSH_FLAGS (e.g. --internal-ip)

$COMMON_HELP
HELP
}

start_script "TPU_PROJECT TPU_ZONE TPU_NAME" "$@"
code_sync
remote_setup
