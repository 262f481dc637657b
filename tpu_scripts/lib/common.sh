# shellcheck shell=bash
# Shared by every tpu_scripts/*.sh: argument parsing, env-file loading, required settings,
# and the dry-run switch. Sourced, never run.
#
# A script using this file defines `usage` (prints its help) and may define
# `script_option NAME VALUE`, which handles one script-specific option: it sets
# SHIFT_N to the number of arguments it used (1 or 2), or returns 1 for "not mine".

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2034  # used by the scripts that source this file
REPO_ROOT="$(cd "$SCRIPTS_DIR/.." && pwd)"
DRY_RUN=0
ENV_FILE=""
LOADED_ENV_FILE=""
SHIFT_N=0

# Print an error naming the problem and exit non-zero.
die() {
  echo "error: $*" >&2
  exit 1
}

# Print a progress line (stderr, so stdout of --dry-run holds only commands).
say() {
  echo "[$(basename "$0")] $*" >&2
}

# Quote one word for a POSIX shell; plain words stay as they are, so a printed command
# reads like one a person would type and can be pasted back unchanged.
q_plain() {
  local s="$1"
  if [[ -n "$s" && "$s" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}

# Like q_plain, but writes --flag='a value' rather than '--flag=a value' (the same word).
q() {
  if [[ "$1" =~ ^(--[A-Za-z0-9_.-]+=)(.+)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    q_plain "${BASH_REMATCH[2]}"
  else
    q_plain "$1"
  fi
}

# Quote every argument and join them with spaces.
join_quoted() {
  local out="" a
  for a in "$@"; do
    out+="${out:+ }$(q "$a")"
  done
  printf '%s' "$out"
}

# Run a command, or with --dry-run print it exactly (one line, shell-quoted).
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    join_quoted "$@"
    echo
  else
    "$@"
  fi
}

# Like `run`, for a local shell pipeline given as one string.
run_sh() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s\n' "$1"
  else
    bash -c "$1"
  fi
}

# A comment line in --dry-run output (explains what the next commands are for).
note() {
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "# $*"
  else
    say "$*"
  fi
}

# Parse --env/--dry-run/--help and the script's own options (see top of file).
parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1; shift ;;
      --env) [[ $# -ge 2 ]] || die "--env needs a file"; ENV_FILE="$2"; shift 2 ;;
      --env=*) ENV_FILE="${1#--env=}"; shift ;;
      *)
        if declare -F script_option >/dev/null && script_option "$1" "${2-}"; then
          shift "$SHIFT_N"
        else
          echo "error: unknown argument: $1 (see --help)" >&2
          exit 2
        fi
        ;;
    esac
  done
}

# Load KEY=value lines from the env file: --env FILE, else $TPU_ENV, else tpu_scripts/tpu.env.
# Values may be quoted; nothing is expanded. A variable already set in the environment wins,
# so `TPU_NAME=other ./launch.sh` works for one call.
load_env() {
  local file="${ENV_FILE:-${TPU_ENV:-}}"
  if [[ -n "$file" ]]; then
    [[ -f "$file" ]] || die "env file not found: $file"
  elif [[ -f "$SCRIPTS_DIR/tpu.env" ]]; then
    file="$SCRIPTS_DIR/tpu.env"
  else
    return 0
  fi
  LOADED_ENV_FILE="$file"
  local line key value n=0 from_file=" "
  while IFS= read -r line || [[ -n "$line" ]]; do
    n=$((n + 1))
    line="${line#"${line%%[![:space:]]*}"}"  # strip leading blanks
    [[ -z "$line" || "$line" == \#* ]] && continue
    line="${line#export }"
    [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] ||
      die "$file:$n: expected KEY=value, got: $line"
    key="${BASH_REMATCH[1]}"
    value="${BASH_REMATCH[2]}"
    value="${value%"${value##*[![:space:]]}"}"  # strip trailing blanks
    if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then
      value="${BASH_REMATCH[1]}"
    fi
    # Set it unless the environment had it before the file: later lines beat earlier ones.
    if [[ -z "${!key+x}" || "$from_file" == *" $key "* ]]; then
      printf -v "$key" '%s' "$value"
      from_file+="$key "
    fi
  done <"$file"
}

# Fail unless every named setting is non-empty; the message names all that are missing.
require() {
  local missing="" v
  for v in "$@"; do
    [[ -n "${!v:-}" ]] || missing+="${missing:+, }$v"
  done
  [[ -z "$missing" ]] && return 0
  if [[ -n "$LOADED_ENV_FILE" ]]; then
    die "missing setting $missing: set it in $LOADED_ENV_FILE or the environment" \
      "(see tpu_scripts/tpu.env.example)"
  fi
  die "missing setting $missing: no env file; copy tpu_scripts/tpu.env.example to" \
    "tpu_scripts/tpu.env, or pass --env FILE"
}

# Split a whitespace-separated setting (e.g. TRAIN_ARGS) into the array WORDS.
# (No namerefs: this file stays compatible with the bash 3.2 that macOS ships.)
split_words() {
  WORDS=()
  # shellcheck disable=SC2034  # read by the caller
  [[ -z "${1:-}" ]] || read -r -a WORDS <<<"$1"
}

# The options every script takes (appended to each script's --help).
# shellcheck disable=SC2034  # used in each script's usage()
COMMON_HELP="Common options:
  --env FILE   settings file (default: \$TPU_ENV, else tpu_scripts/tpu.env);
               see tpu_scripts/tpu.env.example. Variables already set in the
               environment override the file.
  --dry-run    print the exact commands (gcloud ...) instead of running them
  -h, --help   this help"
