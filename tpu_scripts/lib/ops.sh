# shellcheck shell=bash
# The gcloud operations behind the tpu_scripts: one function per step, shared by the
# single-step scripts and babysit.sh. Sourced after common.sh and load_env, never run.
#
# Remote work is done by the small scripts in tpu_scripts/remote/, which travel with the
# code, so the commands sent over ssh stay short and readable.

# Fill in defaults and check settings that have a fixed set of values; called once by
# every script, after load_env.
validate_settings() {
  # Where the code, its .venv and the helpers live on every worker (relative to $HOME).
  REMOTE_DIR="${REMOTE_DIR:-easylm_imitate}"
  # The local checkout is packed into one file for copying (so .venv and .git stay home).
  CODE_TARBALL="/tmp/easylm_imitate_code_${TPU_NAME:-tpu}.tgz"
  REMOTE_TARBALL="/tmp/easylm_imitate_code.tgz"
  case "${TPU_PROVISIONING:=on-demand}" in
    on-demand | spot | preemptible | reserved) ;;
    *) die "TPU_PROVISIONING must be on-demand, spot, preemptible or reserved, got: $TPU_PROVISIONING" ;;
  esac
  case "${TPU_QUEUED:=false}" in
    true | false) ;;
    *) die "TPU_QUEUED must be true or false, got: $TPU_QUEUED" ;;
  esac
  if [[ "$TPU_QUEUED" == true && "$TPU_PROVISIONING" == preemptible ]]; then
    die "TPU_PROVISIONING=preemptible is not offered for queued resources; use spot"
  fi
  [[ "$REMOTE_DIR" =~ ^[A-Za-z0-9_./-]+$ ]] ||
    die "REMOTE_DIR may hold only letters, digits and _ . / -, got: $REMOTE_DIR"
}

# The start every script shares, once its `usage` and options are defined: parse the
# arguments, load the env file, require the settings named in $1 (space-separated), fill
# in and check the settings, and set the location flags.
#   start_script "TPU_PROJECT TPU_ZONE TPU_NAME" "$@"
start_script() {
  local needs="$1"
  shift
  parse_args "$@"
  load_env
  split_words "$needs"
  require ${WORDS[@]+"${WORDS[@]}"}
  validate_settings
  set_location
}

is_queued() { [[ "${TPU_QUEUED:-false}" == true ]]; }

# The flags that place every command: LOC=(--zone=... --project=...).
set_location() {
  require TPU_PROJECT TPU_ZONE TPU_NAME
  LOC=(--zone="$TPU_ZONE" --project="$TPU_PROJECT")
  split_words "${TPU_SSH_FLAGS:-}"
  SSH_EXTRA=(${WORDS[@]+"${WORDS[@]}"})
}

# Run a shell command on one worker (0, 1, ...) or on every worker at once ("all").
tpu_ssh() {
  local worker="$1" cmd="$2"
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOC[@]}" --worker="$worker" \
    ${SSH_EXTRA[@]+"${SSH_EXTRA[@]}"} --command "$cmd"
}

# Create the slice: a TPU VM, or a queued resource (then wait until it is ACTIVE).
tpu_create() {
  require TPU_ACCELERATOR_TYPE TPU_RUNTIME_VERSION
  local flags=()
  case "$TPU_PROVISIONING" in
    spot) flags+=(--spot) ;;
    preemptible) flags+=(--preemptible) ;;
    reserved) flags+=(--reserved) ;;
  esac
  [[ -z "${TPU_NETWORK:-}" ]] || flags+=(--network="$TPU_NETWORK")
  [[ -z "${TPU_SUBNETWORK:-}" ]] || flags+=(--subnetwork="$TPU_SUBNETWORK")
  [[ -z "${TPU_SERVICE_ACCOUNT:-}" ]] || flags+=(--service-account="$TPU_SERVICE_ACCOUNT")
  split_words "${TPU_CREATE_FLAGS:-}"
  flags+=(${WORDS[@]+"${WORDS[@]}"})
  if is_queued; then
    note "queued resource $TPU_NAME: $TPU_ACCELERATOR_TYPE, $TPU_PROVISIONING"
    run gcloud compute tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" "${LOC[@]}" \
      --accelerator-type="$TPU_ACCELERATOR_TYPE" --runtime-version="$TPU_RUNTIME_VERSION" \
      ${flags[@]+"${flags[@]}"}
    tpu_wait_ready
  else
    note "TPU VM $TPU_NAME: $TPU_ACCELERATOR_TYPE, $TPU_PROVISIONING"
    run gcloud compute tpus tpu-vm create "$TPU_NAME" "${LOC[@]}" \
      --accelerator-type="$TPU_ACCELERATOR_TYPE" --version="$TPU_RUNTIME_VERSION" \
      ${flags[@]+"${flags[@]}"}
  fi
}

# The describe command whose output is the slice's state (READY / ACTIVE / PREEMPTED ...).
state_command() {
  if is_queued; then
    STATE_CMD=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${LOC[@]}"
      --format='value(state.state)')
  else
    STATE_CMD=(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${LOC[@]}" --format='value(state)')
  fi
}

# Print the slice's state; MISSING when gcloud says it does not exist, UNKNOWN on other errors.
tpu_state() {
  state_command
  local out
  if out="$("${STATE_CMD[@]}" 2>&1)"; then
    echo "${out:-UNKNOWN}"
  elif [[ "$out" == *NOT_FOUND* || "$out" == *"not found"* ]]; then
    echo MISSING
  else
    say "could not read the state: $out"
    echo UNKNOWN
  fi
}

# The state a usable slice reports.
ready_state() { if is_queued; then echo ACTIVE; else echo READY; fi; }

# Wait until the slice is usable (queued resources can wait hours for capacity).
tpu_wait_ready() {
  local want state
  want="$(ready_state)"
  state_command
  if [[ "$DRY_RUN" == 1 ]]; then
    note "repeated every ${WAIT_INTERVAL:-60}s until the state is $want:"
    run "${STATE_CMD[@]}"
    return 0
  fi
  while state="$(tpu_state)"; [[ "$state" != "$want" ]]; do
    case "$state" in
      FAILED | SUSPENDED | MISSING) die "$TPU_NAME is $state while waiting for $want" ;;
    esac
    say "$TPU_NAME is $state; waiting for $want"
    sleep "${WAIT_INTERVAL:-60}"
  done
}

# Delete the slice (a queued resource takes its node with it).
tpu_delete() {
  if is_queued; then
    run gcloud compute tpus queued-resources delete "$TPU_NAME" "${LOC[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${LOC[@]}" --quiet
  fi
}

# Put the code on every worker: a git checkout at CODE_COMMIT when CODE_REPO is set,
# otherwise a copy of this checkout (tracked and new files; nothing git ignores).
code_sync() {
  if [[ -n "${CODE_REPO:-}" ]]; then
    local commit="${CODE_COMMIT:-}"
    if [[ -z "$commit" ]]; then
      commit="$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null)" ||
        die "missing setting: CODE_COMMIT (and this checkout has no HEAD to default to)"
    fi
    local d
    d="$(q "$REMOTE_DIR")"
    note "code: $CODE_REPO at $commit on every worker"
    tpu_ssh all "if [ -d $d/.git ]; then git -C $d fetch --quiet origin; else git clone --quiet $(q "$CODE_REPO") $d; fi && git -C $d checkout --quiet --force $(q "$commit")"
  else
    note "code: this checkout, copied to every worker"
    run_sh "git -C $(q "$REPO_ROOT") ls-files -z --cached --others --exclude-standard | tar -czf $(q "$CODE_TARBALL") -C $(q "$REPO_ROOT") --null -T -"
    run gcloud compute tpus tpu-vm scp "$CODE_TARBALL" "$TPU_NAME:$REMOTE_TARBALL" "${LOC[@]}" \
      --worker=all ${SSH_EXTRA[@]+"${SSH_EXTRA[@]}"}
    tpu_ssh all "mkdir -p $(q "$REMOTE_DIR") && tar -xzf $REMOTE_TARBALL -C $(q "$REMOTE_DIR")"
  fi
}

# Install the package with its TPU extra into $REMOTE_DIR/.venv on every worker.
remote_setup() {
  note "install easylm_imitate[tpu] on every worker"
  tpu_ssh all "cd $(q "$REMOTE_DIR") && bash tpu_scripts/remote/install.sh $(q "${SETUP_PYTHON:-3.11}")"
}

# Start the same training command on every worker at once, detached, one log per worker.
remote_launch() {
  require TRAIN_CONFIG TRAIN_WORKDIR
  split_words "${TRAIN_ARGS:-}"
  local cmd
  cmd="$(join_quoted bash tpu_scripts/remote/start.sh --config="$TRAIN_CONFIG" \
    --workdir="$TRAIN_WORKDIR" ${WORDS[@]+"${WORDS[@]}"})"
  note "start training on every worker (logs: ~/easylm_logs/train.log on each)"
  tpu_ssh all "cd $(q "$REMOTE_DIR") && $cmd"
}

# Stop training on every worker: SIGTERM (the trainer saves a checkpoint), then SIGKILL.
remote_stop() {
  tpu_ssh all "cd $(q "$REMOTE_DIR") && bash tpu_scripts/remote/stop.sh --timeout=${STOP_TIMEOUT:-300}"
}

# Show the training state and log of one worker or all (extra args go to status.sh).
remote_status() {
  local worker="$1"
  shift
  tpu_ssh "$worker" "cd $(q "$REMOTE_DIR") && $(join_quoted bash tpu_scripts/remote/status.sh "$@")"
}
