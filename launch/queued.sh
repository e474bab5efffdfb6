#!/usr/bin/env bash
# Requests the slice as a queued resource (spot capacity unless SPOT=0), waits until it is
# ACTIVE, then installs irl_lm on every worker. A spot slice can be preempted at any time:
# run training with launch/auto_resume.sh, which recreates the slice and resumes.
#   REPO_URL=... BUCKET=gs://... ACCELERATOR_TYPE=v5p-128 TPU_SOFTWARE=v2-alpha-tpuv5 \
#     launch/queued.sh
set -euo pipefail
here=$(dirname "$0")
. "$here/config.sh"
. "$here/lib.sh"
capacity=()
if [[ "$SPOT" == 1 ]]; then
  capacity=(--spot)
fi
gcloud compute tpus queued-resources create "$QUEUED_RESOURCE" --node-id="$TPU_NAME" \
  --zone="$ZONE" --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$TPU_SOFTWARE" \
  ${capacity[@]+"${capacity[@]}"}
wait_active
"$here/install.sh"
