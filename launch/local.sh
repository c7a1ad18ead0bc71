#!/usr/bin/env bash
# Trains on every accelerator of this host: ONE process drives all local devices; the global
# batch (config.train.batch_size) is split over them (data parallelism, see launch/README.md).
#
#   launch/local.sh --config=configs/div2k.py --workdir=runs/div2k [--config.key=value ...]
#
# Every argument is passed to `python -m pikfix_jax.main`. Rerun with the same --workdir to
# resume from its latest checkpoint.
#
# Environment (all optional):
#   PIKFIX_GPUS=0,1,2,3     use only these GPUs (sets CUDA_VISIBLE_DEVICES)
#   PIKFIX_CPU_DEVICES=N    no accelerator: run on N virtual CPU devices (tests, debugging)
#   PIKFIX_XLA_GPU_FLAGS    extra XLA flags on GPU (default: the latency-hiding scheduler,
#                           which overlaps the gradient all-reduce with the backward pass)
#   XLA_PYTHON_CLIENT_MEM_FRACTION  fraction of each GPU's memory JAX reserves (default 0.90)
#   PYTHON                  interpreter (default: python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"  # tf.data/XLA start-up chatter
python_bin="${PYTHON:-python3}"

# Single-process run: never join a multi-process job by accident (e.g. inside an salloc).
unset JAX_COORDINATOR_ADDRESS JAX_NUM_PROCESSES JAX_PROCESS_ID
if [[ -n "${SLURM_NTASKS:-}" && "${SLURM_NTASKS}" != "1" ]]; then
  echo "launch/local.sh: SLURM_NTASKS=${SLURM_NTASKS}; use launch/slurm.sbatch for multi-process runs." >&2
  exit 2
fi

if [[ -n "${PIKFIX_CPU_DEVICES:-}" ]]; then
  if ! [[ "${PIKFIX_CPU_DEVICES}" =~ ^[1-9][0-9]*$ ]]; then
    echo "launch/local.sh: PIKFIX_CPU_DEVICES must be a positive integer, got '${PIKFIX_CPU_DEVICES}'." >&2
    exit 2
  fi
  export JAX_PLATFORMS=cpu
  export CUDA_VISIBLE_DEVICES=""
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${PIKFIX_CPU_DEVICES}"
else
  if [[ -n "${PIKFIX_GPUS:-}" ]]; then
    export CUDA_VISIBLE_DEVICES="${PIKFIX_GPUS}"
  fi
  export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
  export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
  default_gpu_flags="--xla_gpu_enable_latency_hiding_scheduler=true"
  export XLA_FLAGS="${XLA_FLAGS:-} ${PIKFIX_XLA_GPU_FLAGS-${default_gpu_flags}}"
fi
export XLA_FLAGS="${XLA_FLAGS# }"

exec "${python_bin}" -m pikfix_jax.main "$@"
