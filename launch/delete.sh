#!/usr/bin/env bash
# Deletes the pod slice (run directories in the bucket are kept).
set -euo pipefail
. "$(dirname "$0")/config.sh"
gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
