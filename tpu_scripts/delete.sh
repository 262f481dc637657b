#!/usr/bin/env bash
# Delete the TPU slice (its disks go with it; checkpoints on gs:// stay).
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/ops.sh
source "$SCRIPTS_DIR/lib/ops.sh"

usage() {
  cat <<HELP
Usage: tpu_scripts/delete.sh [--env FILE] [--dry-run]

Delete TPU_NAME without asking (a queued resource is deleted with its node).
Anything written to the workers' disks is lost; keep TRAIN_WORKDIR on gs://.

Needs: TPU_PROJECT TPU_ZONE TPU_NAME

$COMMON_HELP
HELP
}

start_script "TPU_PROJECT TPU_ZONE TPU_NAME" "$@"
tpu_delete
