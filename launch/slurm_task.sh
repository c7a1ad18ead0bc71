#!/usr/bin/env bash
# One SLURM task of a multi-process run (started by launch/slurm.sbatch through srun).
#
# jax.distributed.initialize() takes the coordinator, process count and process id from
# SLURM_*; which local GPUs this process drives is set here, because JAX's SLURM default
# (local_device_ids = [SLURM_LOCALID]) is wrong in two common layouts:
#   * one task per node: the task must drive ALL of the node's GPUs, not only GPU 0;
#   * one task per GPU with SLURM binding (--gpus-per-task=1): the task sees one GPU, id 0.
# Set JAX_LOCAL_DEVICE_IDS yourself to override. PIKFIX_DRY_RUN=1 prints the decision and
# the command instead of running it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}"
python_bin="${PYTHON:-python3}"

count_visible_gpus() {
  if [[ -n "${CUDA_VISIBLE_DEVICES+x}" ]]; then
    local ids="${CUDA_VISIBLE_DEVICES}"
    if [[ -z "${ids}" || "${ids}" == "NoDevFiles" ]]; then echo 0; return; fi
    tr ',' '\n' <<<"${ids}" | grep -c .
  elif command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
  else
    echo 0
  fi
}

if [[ -z "${JAX_LOCAL_DEVICE_IDS:-}" ]]; then
  tasks_per_node="${SLURM_NTASKS_PER_NODE:-${SLURM_TASKS_PER_NODE:-1}}"
  tasks_per_node="${tasks_per_node%%(*}"  # SLURM_TASKS_PER_NODE looks like '8(x2)'
  tasks_per_node="${tasks_per_node%%,*}"
  visible="$(count_visible_gpus)"
  if (( visible == 0 )); then
    :  # CPU-only node: leave JAX's defaults.
  elif (( tasks_per_node == 1 )); then
    JAX_LOCAL_DEVICE_IDS="$(seq -s, 0 $((visible - 1)))"  # this task drives every GPU
  elif (( visible == 1 )); then
    JAX_LOCAL_DEVICE_IDS=0  # bound to its own GPU
  else
    JAX_LOCAL_DEVICE_IDS="${SLURM_LOCALID:-0}"  # all GPUs visible, one each
  fi
  if [[ -n "${JAX_LOCAL_DEVICE_IDS:-}" ]]; then export JAX_LOCAL_DEVICE_IDS; fi
fi

if [[ "${SLURM_PROCID:-0}" == "0" ]]; then
  echo "pikfix task ${SLURM_PROCID:-0}/${SLURM_NTASKS:-1} on $(hostname): JAX_LOCAL_DEVICE_IDS=${JAX_LOCAL_DEVICE_IDS:-<jax default>}" >&2
fi
if [[ "${PIKFIX_DRY_RUN:-0}" == "1" ]]; then
  echo "JAX_LOCAL_DEVICE_IDS=${JAX_LOCAL_DEVICE_IDS:-}"
  echo "${python_bin} -m pikfix_jax.main $*"
  exit 0
fi
exec "${python_bin}" -m pikfix_jax.main "$@"
