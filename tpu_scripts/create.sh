#!/usr/bin/env bash
# Create the TPU slice named in the env file: a TPU VM, or a queued resource.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/ops.sh
source "$SCRIPTS_DIR/lib/ops.sh"

usage() {
  cat <<HELP
Usage: tpu_scripts/create.sh [--env FILE] [--dry-run]

Create the TPU slice TPU_NAME of type TPU_ACCELERATOR_TYPE (v4-32, v5litepod-16, ...)
with runtime TPU_RUNTIME_VERSION in TPU_ZONE of TPU_PROJECT.
TPU_QUEUED=true asks for a queued resource and waits until it is ACTIVE;
TPU_PROVISIONING=spot|preemptible|reserved|on-demand picks how it is paid for.

Needs: TPU_PROJECT TPU_ZONE TPU_NAME TPU_ACCELERATOR_TYPE TPU_RUNTIME_VERSION
Optional: TPU_PROVISIONING TPU_QUEUED TPU_NETWORK TPU_SUBNETWORK TPU_SERVICE_ACCOUNT
          TPU_CREATE_FLAGS (more gcloud flags, space-separated)

$COMMON_HELP
HELP
}

start_script "TPU_PROJECT TPU_ZONE TPU_NAME TPU_ACCELERATOR_TYPE TPU_RUNTIME_VERSION" "$@"
tpu_create
