#!/usr/bin/env bash
# Installs irl_lm (this repository at REPO_URL) on every worker of the slice.
#   REPO_URL=... BUCKET=gs://... launch/install.sh
set -euo pipefail
. "$(dirname "$0")/config.sh"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  sudo apt-get update -qq && sudo apt-get install -y -qq python3.11 python3.11-venv git
  rm -rf irl_lm && git clone -q '$REPO_URL' irl_lm && cd irl_lm
  python3.11 -m venv .venv && . .venv/bin/activate
  pip install -q -e . && pip install -q 'jax[tpu]==0.10.2'
"
