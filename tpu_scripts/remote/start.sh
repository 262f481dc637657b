#!/usr/bin/env bash
# Runs ON a worker (launch.sh sends it): start `python -m easylm_imitate.train ARGS...`
# detached from the ssh session, appending to $EASYLM_LOG_DIR/train.log (default
# ~/easylm_logs). Writes train.pid, and exit_code when the run ends. Refuses to start
# a second run while one is alive.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
log_dir="${EASYLM_LOG_DIR:-$HOME/easylm_logs}"
python="${EASYLM_PYTHON:-$repo/.venv/bin/python}"
mkdir -p "$log_dir"
pid_file="$log_dir/train.pid"
if [[ "$(bash "$(dirname "${BASH_SOURCE[0]}")/status.sh" --state)" == running ]]; then
  echo "error: training already runs on $(hostname) (pid $(cat "$pid_file")); stop it first" >&2
  exit 1
fi
rm -f "$log_dir/exit_code"
echo "=== $(date -u +%FT%TZ) start on $(hostname): $python -m easylm_imitate.train $*" \
  >>"$log_dir/train.log"
cd "$repo"
# setsid: its own process group, so stop.sh can signal the run and all its children.
# nohup + </dev/null: it outlives the ssh session. The wrapper traps TERM (a handler, not
# an ignore, so the trainer still gets the signal) to record the exit code after a stop.
# shellcheck disable=SC2016  # expanded by the inner bash
EASYLM_EXIT_FILE="$log_dir/exit_code" setsid nohup bash -c \
  'trap ":" TERM; "$@"; echo "$?" >"$EASYLM_EXIT_FILE"' easylm-train \
  "$python" -m easylm_imitate.train "$@" >>"$log_dir/train.log" 2>&1 </dev/null &
echo "$!" >"$pid_file"
echo "started on $(hostname): pid $!, log $log_dir/train.log"
