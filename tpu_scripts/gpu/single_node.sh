#!/usr/bin/env bash
# Fine-tune on one machine with N GPUs: one process drives them all.
set -euo pipefail
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

usage() {
  cat <<HELP
Usage: tpu_scripts/gpu/single_node.sh [--gpus=N] [--mem-fraction=F] [--dry-run] [--] TRAIN_FLAGS...

Run python -m easylm_imitate.train TRAIN_FLAGS on this machine's GPUs: one process, every
visible GPU in the mesh (the default mesh "dp:1,fsdp:-1,tp:1" shards over all of them).
Sets the XLA/NCCL defaults of tpu_scripts/gpu/xla_env.sh. Rerun the same command to resume.

  --gpus=N          use GPUs 0..N-1 (sets CUDA_VISIBLE_DEVICES; default: all visible)
  --mem-fraction=F  share of each GPU's memory JAX may take (default 0.90)
  --dry-run         print the environment and command instead of running them
  -h, --help        this help
Python: \$EASYLM_PYTHON, else .venv/bin/python of this checkout (pip install -e ".[gpu]").

Example (the paper's 8xA100 server):
  tpu_scripts/gpu/single_node.sh --gpus=8 -- --config=configs/llama_7b_imitation.py \\
    --workdir=runs/llama7b --config.init_from=checkpoints/llama-7b
HELP
}

train_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --gpus=*) gpus="${1#--gpus=}" ;;
    --mem-fraction=*) export XLA_PYTHON_CLIENT_MEM_FRACTION="${1#--mem-fraction=}" ;;
    --) shift; train_args+=("$@"); break ;;
    *) train_args+=("$1") ;;
  esac
  shift
done
[[ ${#train_args[@]} -gt 0 ]] ||
  die "no training flags; e.g. single_node.sh -- --config=configs/llama_7b_imitation.py --workdir=DIR"

if [[ -n "${gpus:-}" ]]; then
  [[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--gpus must be a positive number, got: $gpus"
  export CUDA_VISIBLE_DEVICES
  CUDA_VISIBLE_DEVICES="$(seq -s, 0 $((gpus - 1)))"
fi
# shellcheck source=xla_env.sh
source "$SCRIPTS_DIR/gpu/xla_env.sh"

python="${EASYLM_PYTHON:-$REPO_ROOT/.venv/bin/python}"
cd "$REPO_ROOT"
# The settings this run gets, as NAME=value words a shell reads back as assignments.
env_shown=""
for v in CUDA_VISIBLE_DEVICES XLA_PYTHON_CLIENT_MEM_FRACTION NCCL_DEBUG XLA_FLAGS; do
  [[ -z "${!v+x}" ]] || env_shown+="$v=$(q_plain "${!v}") "
done
if [[ "$DRY_RUN" == 1 ]]; then
  echo "$env_shown$(join_quoted "$python" -m easylm_imitate.train "${train_args[@]}")"
  exit 0
fi
say "$env_shown"
exec "$python" -m easylm_imitate.train "${train_args[@]}"
