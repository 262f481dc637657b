# shellcheck shell=bash
# XLA, JAX and NCCL settings for training on NVIDIA GPUs. Sourced by single_node.sh and
# slurm.sbatch. Every value is a default: a variable you already exported wins, and flags
# in your XLA_FLAGS come after ours, so they override them.
# A flag XLA does not know is fatal at start-up; tests/scripts check these against the
# installed jaxlib.

GPU_XLA_FLAGS=(
  # Overlap collectives (FSDP all-gathers, gradient reduce-scatters) with compute.
  --xla_gpu_enable_latency_hiding_scheduler=true
  --xla_gpu_enable_highest_priority_async_stream=true
  # Fewer, larger collectives: combine up to 128 MiB per all-reduce/all-gather/reduce-scatter.
  --xla_gpu_all_reduce_combine_threshold_bytes=134217728
  --xla_gpu_all_gather_combine_threshold_bytes=134217728
  --xla_gpu_reduce_scatter_combine_threshold_bytes=134217728
  # The layers are a scanned loop: prefetch the next layer's weights while this one runs.
  --xla_gpu_enable_pipelined_all_gather=true
  --xla_gpu_enable_pipelined_reduce_scatter=true
  --xla_gpu_enable_pipelined_all_reduce=true
  --xla_gpu_enable_while_loop_double_buffering=true
)
export XLA_FLAGS="${GPU_XLA_FLAGS[*]}${XLA_FLAGS:+ $XLA_FLAGS}"
# JAX takes 75% of each GPU by default; training wants most of it (keep some for NCCL/cuDNN).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
# NCCL warnings (e.g. a fallback from NVLink/InfiniBand to sockets) are worth seeing.
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
