#!/usr/bin/env bash
# Stop training on every worker (the slice keeps running; delete.sh removes it).
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/ops.sh
source "$SCRIPTS_DIR/lib/ops.sh"

script_option() {
  case "$1" in
    --timeout) STOP_TIMEOUT="$2"; SHIFT_N=2 ;;
    --timeout=*) STOP_TIMEOUT="${1#--timeout=}"; SHIFT_N=1 ;;
    *) return 1 ;;
  esac
}

usage() {
  cat <<HELP
Usage: tpu_scripts/stop.sh [--env FILE] [--dry-run] [--timeout=SECONDS]

On every worker: send SIGTERM to the training run (the trainer saves a checkpoint),
wait up to --timeout seconds (default 300) for it to exit, then SIGKILL what is left.
Stop babysit.sh first, or it will relaunch.

Needs: TPU_PROJECT TPU_ZONE TPU_NAME

$COMMON_HELP
HELP
}

start_script "TPU_PROJECT TPU_ZONE TPU_NAME" "$@"
[[ "${STOP_TIMEOUT:-300}" =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
remote_stop
