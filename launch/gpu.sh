#!/usr/bin/env bash
# Train vi_gen on NVIDIA GPUs: every GPU of this machine (one process), or
# several machines under Slurm (one process per GPU, `--distributed`).
#
# Needs:
#   * Linux x86-64, NVIDIA GPUs and a driver recent enough for CUDA 12
#     (`nvidia-smi` works; the jax[cuda12] wheels bring CUDA and cuDNN);
#   * Python 3.11 or newer (PYTHON_FOR_VENV, default python3.11);
#   * a prepared TFDS celeb_a in $DATA_DIR (without it vi_gen stops at once
#     and prints the steps: five files from the CelebA page, one command);
#   * for `slurm`: a Slurm cluster whose nodes share this checkout and
#     $WORKDIR (NFS or similar): every process writes its part of each Orbax
#     checkpoint into the same directory.
# Costs: hours x GPUs x the hourly price of that GPU. We quote no price: cloud
#   list prices change and differ by provider and region, so look yours up
#   (on your own machines it is the power). The paper's experiment is 158,250
#   iterations x 314 GFLOP (XLA's count for one iteration at batch 64) =
#   5.0e16 FLOP; the log prints it/s and the ETA after 100 iterations, so
#   read them and stop early if the estimate is too high. At batch 64 one GPU
#   is the right size; more GPUs pay off with a larger --config.batch_size
#   (a multiple of the number of GPUs).
#
# Usage, from the repository root:
#   launch/gpu.sh setup                # .venv with jax[cuda12] and vi_gen
#   launch/gpu.sh train [FLAGS]        # every GPU of this machine
#   launch/gpu.sh slurm NODES [FLAGS]  # srun on NODES nodes, all their GPUs
# FLAGS go to `python -m vi_gen.main`, e.g. --config.reg_weight=0. Running
# the same command again resumes from the latest checkpoint in $WORKDIR.
# Settings (environment, with defaults): CONFIG=configs/gan.py,
# WORKDIR=runs/gan_celeba, DATA_DIR=~/tensorflow_datasets, GPUS_PER_NODE=8
# (slurm), PYTHON=.venv/bin/python; DRY_RUN=1 prints the commands instead of
# running them.
set -euo pipefail

CONFIG="${CONFIG:-configs/gan.py}"
WORKDIR="${WORKDIR:-runs/gan_celeba}"
DATA_DIR="${DATA_DIR:-$HOME/tensorflow_datasets}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
PYTHON="${PYTHON:-.venv/bin/python}"
PYTHON_FOR_VENV="${PYTHON_FOR_VENV:-python3.11}"
JAX_VERSION=0.10.2  # requirements.lock's

run() {
  if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

train=("$PYTHON" -m vi_gen.main "--config=$CONFIG" "--workdir=$WORKDIR"
  "--config.run.data_dir=$DATA_DIR")

case "${1:-}" in
  setup)
    run "$PYTHON_FOR_VENV" -m venv .venv
    run .venv/bin/pip install -r requirements.lock -e . \
      "jax[cuda12]==$JAX_VERSION"
    run .venv/bin/python -c 'import jax; print(jax.devices())'
    ;;
  train)
    shift
    # One process drives every local GPU: the ('data',) mesh spans them all.
    run "${train[@]}" "$@"
    ;;
  slurm)
    nodes="${2:?usage: launch/gpu.sh slurm NODES [FLAGS]}"
    shift 2
    # jax.distributed.initialize() reads Slurm's variables and gives each
    # process the GPU of its local rank, so every task must see all GPUs of
    # its node (no per-task GPU binding).
    run srun "--nodes=$nodes" "--ntasks-per-node=$GPUS_PER_NODE" \
      "--gpus-per-node=$GPUS_PER_NODE" "${train[@]}" --distributed "$@"
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
    ;;
esac
