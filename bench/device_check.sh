#!/usr/bin/env bash
# One prepared accelerator check for a lent GPU (H100/H200), at most 8 minutes:
# bfloat16 training tokens/s and MFU for llama-1b with model.attention cudnn vs xla,
# a LoRA step's tokens/s, prefill and decode tokens/s; prints one markdown table for
# bench/RESULTS.md.
#
#   bench/device_check.sh                 # on the GPU machine (JAX with CUDA installed)
#   bench/device_check.sh --dry_run       # CPU, tiny model, a few steps: the same code path
#   bench/device_check.sh --help          # every flag of bench/device_check.py
#
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3);
# DEVICE_CHECK_LIMIT the wall-clock bound in seconds (default 480).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
  sed -n '2,12s/^# \{0,1\}//p' "$0"
  echo
  exec "$PYTHON" bench/device_check.py --help
fi
exec timeout "${DEVICE_CHECK_LIMIT:-480}" "$PYTHON" bench/device_check.py "$@"
