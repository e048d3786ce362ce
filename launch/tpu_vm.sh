#!/usr/bin/env bash
# Train vi_gen on a Cloud TPU VM: one host (v5litepod-8, the default) or a
# multi-host slice (v4-32, v5litepod-16, ...), with every host running
# `python -m vi_gen.main --distributed` on its share of the data.
#
# Needs:
#   * the gcloud CLI, logged in (`gcloud auth login`), and a project with the
#     Cloud TPU API enabled and quota for $ACCELERATOR in $ZONE;
#   * a GCS bucket $BUCKET in the same region holding a prepared TFDS
#     celeb_a at gs://$BUCKET/tensorflow_datasets/celeb_a/2.1.0: prepare it
#     once on any machine (without it vi_gen prints the steps), then
#     `gcloud storage cp -r ~/tensorflow_datasets/celeb_a
#     gs://$BUCKET/tensorflow_datasets/`;
#   * this checkout with its changes committed: `setup` ships
#     `git archive HEAD` to the workers.
# Costs: a TPU VM is billed per chip-hour from `create` to `delete`, training
#   or idle: hours x chips x the price per chip-hour of $ACCELERATOR in $ZONE
#   (https://cloud.google.com/tpu/pricing; we quote no figure because it
#   changes and differs by region, on-demand or spot). SPOT=1 is cheaper but
#   can be preempted: run `train` again on a new VM and the run resumes from
#   its last checkpoint in the bucket. Add GCS storage for ~1.6 GB of data
#   and the run, and egress for `fetch`. The paper's experiment is 158,250
#   iterations x 314 GFLOP (XLA's count for one iteration at batch 64) =
#   5.0e16 FLOP; `logs` shows it/s and the ETA after 100 iterations, so check
#   them and `delete` if the estimate is too high. At batch 64 one host is
#   plenty; more hosts pay off with a larger --config.batch_size (a multiple
#   of the number of chips).
#
# Usage, from the repository root:
#   export PROJECT=my-project ZONE=us-central1-a BUCKET=my-bucket
#   launch/tpu_vm.sh create         # the TPU VM
#   launch/tpu_vm.sh setup          # on every worker: code, Python 3.11 and
#                                   # the dependencies, CelebA, the bucket
#   launch/tpu_vm.sh train [FLAGS]  # starts training on every worker
#   launch/tpu_vm.sh logs           # follows worker 0's log
#   launch/tpu_vm.sh fetch          # copies the run to runs/$RUN here
#   launch/tpu_vm.sh delete         # deletes the VM: the billing stops
# FLAGS go to `python -m vi_gen.main`, e.g. --config.reg_weight=0.
# Settings (environment, with defaults): TPU_NAME=vi-gen,
# ACCELERATOR=v5litepod-8, RUNTIME=v2-alpha-tpuv5-lite (v4:
# tpu-ubuntu2204-base), SPOT (empty: on-demand), CONFIG=configs/gan.py,
# RUN=gan_celeba; DRY_RUN=1 prints the commands instead of running them.
#
# Every host writes its part of each Orbax checkpoint into one directory, so
# the workdir must be shared: the bucket, mounted with gcsfuse at ~/bucket on
# every worker. The data is copied to each worker's disk, which reads faster.
set -euo pipefail

if [[ ! "${1:-}" =~ ^(create|setup|train|logs|fetch|delete)$ ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
PROJECT="${PROJECT:?set PROJECT to your Google Cloud project}"
ZONE="${ZONE:?set ZONE, e.g. us-central1-a}"
BUCKET="${BUCKET:?set BUCKET to a GCS bucket name (no gs://)}"
TPU_NAME="${TPU_NAME:-vi-gen}"
ACCELERATOR="${ACCELERATOR:-v5litepod-8}"
RUNTIME="${RUNTIME:-v2-alpha-tpuv5-lite}"
CONFIG="${CONFIG:-configs/gan.py}"
RUN="${RUN:-gan_celeba}"
JAX_VERSION=0.10.2  # requirements.lock's
WHERE=(--project="$PROJECT" --zone="$ZONE")

run() {
  if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

on_workers() {  # on_workers WORKER COMMAND: COMMAND on one or all workers
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${WHERE[@]}" \
    --worker="$1" --command="$2"
}

SETUP="set -euo pipefail
mkdir -p ~/vi_gen && tar -xzf ~/vi_gen.tar.gz -C ~/vi_gen
curl -LsSf https://astral.sh/uv/install.sh | sh
~/.local/bin/uv venv --python 3.11 ~/vi_gen/.venv
~/.local/bin/uv pip install --python ~/vi_gen/.venv/bin/python \
  -r ~/vi_gen/requirements.lock -e ~/vi_gen 'jax[tpu]==$JAX_VERSION'
mkdir -p ~/tensorflow_datasets/celeb_a
gcloud storage cp -r gs://$BUCKET/tensorflow_datasets/celeb_a/2.1.0 \
  ~/tensorflow_datasets/celeb_a/
if ! command -v gcsfuse > /dev/null; then
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
    | sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null
  echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc]\
 https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" \
    | sudo tee /etc/apt/sources.list.d/gcsfuse.list
  sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
fi
mkdir -p ~/bucket
# Orbax finishes a checkpoint by renaming its directory.
mountpoint -q ~/bucket \
  || gcsfuse --implicit-dirs --rename-dir-limit=1000000 $BUCKET ~/bucket"

case "${1:-}" in
  create)
    run gcloud compute tpus tpu-vm create "$TPU_NAME" "${WHERE[@]}" \
      --accelerator-type="$ACCELERATOR" --version="$RUNTIME" \
      --scopes=https://www.googleapis.com/auth/cloud-platform \
      ${SPOT:+--spot}
    ;;
  setup)
    run git archive --format=tar.gz -o /tmp/vi_gen.tar.gz HEAD
    run gcloud compute tpus tpu-vm scp /tmp/vi_gen.tar.gz "$TPU_NAME:" \
      "${WHERE[@]}" --worker=all
    on_workers all "$SETUP"
    ;;
  train)
    shift
    flags=''
    if (($#)); then flags=$(printf ' %q' "$@"); fi
    # In the background, so that a dropped ssh session does not stop it.
    on_workers all "cd ~/vi_gen && nohup .venv/bin/python -m vi_gen.main\
 --distributed --config=$CONFIG --workdir=\$HOME/bucket/runs/$RUN\
 --config.run.data_dir=\$HOME/tensorflow_datasets$flags\
 > ~/vi_gen_$RUN.log 2>&1 < /dev/null &"
    ;;
  logs)
    on_workers 0 "tail -n 50 -f ~/vi_gen_$RUN.log"
    ;;
  fetch)
    run mkdir -p runs
    run gcloud storage cp -r "gs://$BUCKET/runs/$RUN" runs/
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${WHERE[@]}" --quiet
    ;;
esac
