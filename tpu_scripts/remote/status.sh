#!/usr/bin/env bash
# Runs ON a worker (check.sh / babysit.sh send it): report the training run of this host.
#   --state      print one word: running | exited:N | stopped | none
#   --lines=N    otherwise: a header line and the last N lines of the log (default 20)
#   --follow     then keep printing the log as it grows
set -euo pipefail
log_dir="${EASYLM_LOG_DIR:-$HOME/easylm_logs}"
lines=20 state_only=0 follow=0
for arg in "$@"; do
  case "$arg" in
    --state) state_only=1 ;;
    --follow) follow=1 ;;
    --lines=*) lines="${arg#--lines=}" ;;
    *) echo "error: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

pid="$(cat "$log_dir/train.pid" 2>/dev/null || true)"
# Alive, not a zombie left for init to reap.
if [[ -n "$pid" ]] && [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" =~ ^[^Z] ]]; then
  state=running
elif [[ -s "$log_dir/exit_code" ]]; then
  state="exited:$(cat "$log_dir/exit_code")"
elif [[ -n "$pid" ]]; then
  state=stopped  # killed before it could write an exit code
else
  state=none
fi

if [[ "$state_only" == 1 ]]; then
  echo "$state"
  exit 0
fi
echo "=== $(hostname): $state${pid:+ (pid $pid)} ==="
[[ -f "$log_dir/train.log" ]] || exit 0
if [[ "$follow" == 1 ]]; then
  exec tail -n "$lines" -F "$log_dir/train.log"
fi
tail -n "$lines" "$log_dir/train.log"
