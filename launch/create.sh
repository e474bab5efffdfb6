#!/usr/bin/env bash
# Creates a Cloud TPU pod slice (on demand) and installs irl_lm on every worker. For spot
# (preemptible) capacity through the queue, use launch/queued.sh instead.
#   REPO_URL=... BUCKET=gs://... launch/create.sh
set -euo pipefail
. "$(dirname "$0")/config.sh"
gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
  --accelerator-type="$ACCELERATOR_TYPE" --version="$TPU_SOFTWARE"
"$(dirname "$0")/install.sh"
