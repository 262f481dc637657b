#!/usr/bin/env bash
# Copy the current code and start the same training command on every worker at once.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/ops.sh
source "$SCRIPTS_DIR/lib/ops.sh"

SYNC=1
script_option() {
  case "$1" in
    --no-sync) SYNC=0; SHIFT_N=1 ;;
    *) return 1 ;;
  esac
}

usage() {
  cat <<HELP
Usage: tpu_scripts/launch.sh [--env FILE] [--dry-run] [--no-sync]

Copy the code to every worker (skip with --no-sync), then on all workers at once run,
detached (it survives the ssh session) with its output in ~/easylm_logs/train.log:

  python -m easylm_imitate.train --config=TRAIN_CONFIG --workdir=TRAIN_WORKDIR TRAIN_ARGS

jax.distributed finds the other hosts by itself on a TPU pod. Launching again with the
same TRAIN_WORKDIR resumes from its latest checkpoint. A worker already training refuses
to start a second run: stop it first (tpu_scripts/stop.sh).

Needs: TPU_PROJECT TPU_ZONE TPU_NAME TRAIN_CONFIG TRAIN_WORKDIR (a gs:// path on a pod)
Optional: TRAIN_ARGS (space-separated, e.g. --config.init_from=gs://... ) REMOTE_DIR
          CODE_REPO CODE_COMMIT TPU_SSH_FLAGS

$COMMON_HELP
HELP
}

start_script "TPU_PROJECT TPU_ZONE TPU_NAME TRAIN_CONFIG TRAIN_WORKDIR" "$@"
[[ "$SYNC" == 0 ]] || code_sync
remote_launch
