#!/usr/bin/env bash
# Deletes the slice and its queued-resource request, if any (run directories in the bucket
# are kept).
set -euo pipefail
here=$(dirname "$0")
. "$here/config.sh"
. "$here/lib.sh"
if [[ "$(queued_state)" != NONE ]]; then
  gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE" --zone="$ZONE" --force --quiet
elif [[ "$(tpu_state)" != NONE ]]; then
  gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
fi
