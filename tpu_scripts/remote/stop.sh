#!/usr/bin/env bash
# Runs ON a worker (stop.sh sends it): SIGTERM the training run's process group (the
# trainer saves a checkpoint), wait up to --timeout seconds, then SIGKILL what is left.
set -euo pipefail
log_dir="${EASYLM_LOG_DIR:-$HOME/easylm_logs}"
timeout=300
for arg in "$@"; do
  case "$arg" in
    --timeout=*) timeout="${arg#--timeout=}" ;;
    *) echo "error: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# Whether any process of the run's group is alive (zombies waiting to be reaped are not).
group_alive() {
  ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

pid="$(cat "$log_dir/train.pid" 2>/dev/null || true)"
if [[ -z "$pid" ]] || ! group_alive "$pid"; then
  echo "$(hostname): no training running"
  exit 0
fi
# start.sh made the run a session leader, so its pid is also its process-group id.
kill -TERM -- "-$pid" 2>/dev/null || true
for ((waited = 0; waited < timeout; waited++)); do
  group_alive "$pid" || break
  sleep 1
done
if group_alive "$pid"; then
  echo "$(hostname): still running after ${timeout}s; SIGKILL"
  kill -KILL -- "-$pid" 2>/dev/null || true
  sleep 1
fi
# A killed TPU process can leave this lock behind and block the next run.
rm -f "${EASYLM_TPU_LOCKFILE:-/tmp/libtpu_lockfile}"
echo "$(hostname): stopped training (pid $pid)"
