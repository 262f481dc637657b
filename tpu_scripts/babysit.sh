#!/usr/bin/env bash
# Keep a training run alive on a preemptible slice: poll, re-create, set up, relaunch.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/ops.sh
source "$SCRIPTS_DIR/lib/ops.sh"

INTERVAL=300
MAX_RESTARTS=20
script_option() {
  case "$1" in
    --interval) INTERVAL="$2"; SHIFT_N=2 ;;
    --interval=*) INTERVAL="${1#--interval=}"; SHIFT_N=1 ;;
    --max-restarts) MAX_RESTARTS="$2"; SHIFT_N=2 ;;
    --max-restarts=*) MAX_RESTARTS="${1#--max-restarts=}"; SHIFT_N=1 ;;
    *) return 1 ;;
  esac
}

usage() {
  cat <<HELP
Usage: tpu_scripts/babysit.sh [--env FILE] [--dry-run] [--interval=SECONDS] [--max-restarts=N]

Every --interval seconds (default 300) read the state of TPU_NAME:
  READY (ACTIVE for a queued resource): ask worker 0 how training is doing;
      running -> nothing to do; finished with exit code 0 -> exit 0;
      never started, stopped or crashed -> launch (counts as a restart).
  PREEMPTED, TERMINATED, FAILED, SUSPENDED or gone: delete, create, setup, launch.
  anything else (CREATING, WAITING_FOR_RESOURCES, ...): wait.
The trainer resumes from the latest checkpoint in TRAIN_WORKDIR, so a relaunch loses at
most the steps since the last save. Gives up (exit 1) after --max-restarts (default 20).
Run it where it survives your logout: tmux, screen, or a small always-on VM.

Needs: everything create.sh and launch.sh need.

$COMMON_HELP
HELP
}

start_script "TPU_PROJECT TPU_ZONE TPU_NAME TPU_ACCELERATOR_TYPE TPU_RUNTIME_VERSION \
  TRAIN_CONFIG TRAIN_WORKDIR" "$@"
[[ "$INTERVAL" =~ ^[0-9]+$ ]] || die "--interval must be a number of seconds"
[[ "$MAX_RESTARTS" =~ ^[0-9]+$ ]] || die "--max-restarts must be a number"
WAIT_INTERVAL=60

# A fresh slice from nothing: the same steps a person runs by hand.
recreate() {
  tpu_delete || true  # already gone is fine
  tpu_create  # waits until the slice is usable
  code_sync
  remote_setup
  remote_launch
}

if [[ "$DRY_RUN" == 1 ]]; then
  note "every ${INTERVAL}s: read the state"
  state_command
  run "${STATE_CMD[@]}"
  note "when $(ready_state): ask worker 0 how training is doing (running | exited:N | stopped | none)"
  remote_status 0 --state
  note "when it is exited:N (N != 0), stopped or none: relaunch"
  remote_launch
  note "when PREEMPTED, TERMINATED, FAILED, SUSPENDED or missing: re-create, set up, relaunch"
  recreate
  exit 0
fi

# Run one recovery step in a subshell, so a failure (even a `die`) is reported and the
# loop goes on. Called as a plain statement: in `if`/`||` context bash would ignore set -e.
try_step() {
  local rc
  set +e
  (set -e; "$@")
  rc=$?
  set -e
  [[ "$rc" == 0 ]] || say "$1 failed (exit $rc); will look again in ${INTERVAL}s"
}

restarts=0
count_restart() {
  restarts=$((restarts + 1))
  [[ "$restarts" -le "$MAX_RESTARTS" ]] || die "gave up after $MAX_RESTARTS restarts"
  say "restart $restarts of at most $MAX_RESTARTS: $1"
}

while true; do
  state="$(tpu_state)"
  case "$state" in
    READY | ACTIVE)
      # Only the last line: gcloud may print ssh chatter first.
      training="$(remote_status 0 --state 2>/dev/null | tail -n 1 || true)"
      case "$training" in
        running) ;;
        exited:0) say "training finished (exit code 0)"; exit 0 ;;
        exited:* | stopped | none)
          count_restart "training is '$training' on a $state slice"
          try_step remote_launch
          ;;
        *) say "could not read the training state of worker 0 ('$training'); will look again" ;;
      esac
      ;;
    PREEMPTED | TERMINATED | FAILED | SUSPENDED | SUSPENDING | STOPPED | MISSING)
      count_restart "$TPU_NAME is $state"
      try_step recreate
      ;;
    *) say "$TPU_NAME is $state; waiting" ;;
  esac
  sleep "$INTERVAL"
done
