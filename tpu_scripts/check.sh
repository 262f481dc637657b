#!/usr/bin/env bash
# Show the slice's state and, per worker, whether training runs and its last log lines.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/ops.sh
source "$SCRIPTS_DIR/lib/ops.sh"

WORKER=all
LINES_N=20
FOLLOW=0
script_option() {
  case "$1" in
    --worker) WORKER="$2"; SHIFT_N=2 ;;
    --worker=*) WORKER="${1#--worker=}"; SHIFT_N=1 ;;
    --lines) LINES_N="$2"; SHIFT_N=2 ;;
    --lines=*) LINES_N="${1#--lines=}"; SHIFT_N=1 ;;
    --follow) FOLLOW=1; SHIFT_N=1 ;;
    *) return 1 ;;
  esac
}

usage() {
  cat <<HELP
Usage: tpu_scripts/check.sh [--env FILE] [--dry-run] [--worker=N|all] [--lines=N] [--follow]

Print the state of TPU_NAME (READY, PREEMPTED, ...), then for each worker (default: all)
whether training is running or how it exited, and the last --lines (default 20) lines of
its log. --follow keeps printing the log as it grows (use it with one --worker).

Needs: TPU_PROJECT TPU_ZONE TPU_NAME

$COMMON_HELP
HELP
}

start_script "TPU_PROJECT TPU_ZONE TPU_NAME" "$@"
[[ "$WORKER" == all || "$WORKER" =~ ^[0-9]+$ ]] || die "--worker must be a number or all, got: $WORKER"
[[ "$LINES_N" =~ ^[0-9]+$ ]] || die "--lines must be a number, got: $LINES_N"
state_command
run "${STATE_CMD[@]}"
if [[ "$FOLLOW" == 1 ]]; then
  remote_status "$WORKER" --lines="$LINES_N" --follow
else
  remote_status "$WORKER" --lines="$LINES_N"
fi
