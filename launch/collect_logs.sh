#!/usr/bin/env bash
# Copies every worker's log of an experiment to $LOG_DIR/<name>/from_bucket/ here: each
# worker first uploads its log so far to $BUCKET/<name>/logs/ (if the slice still exists).
#   launch/collect_logs.sh my_experiment
set -euo pipefail
here=$(dirname "$0")
. "$here/config.sh"
. "$here/lib.sh"
NAME=${1:?usage: launch/collect_logs.sh EXPERIMENT_NAME}
RUN_DIR="$BUCKET/$NAME"
if [[ "$(tpu_state)" == READY ]]; then
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
    --command="irl_lm/launch/worker.sh upload-logs '$RUN_DIR'" || true
fi
out="$LOG_DIR/$(run_key "$NAME")/from_bucket"
mkdir -p "$out"
gcloud storage cp "$RUN_DIR/logs/*" "$out/"
ls -l "$out"
