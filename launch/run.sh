#!/usr/bin/env bash
# Runs one experiment on every worker of the slice (each worker runs the same command; JAX
# forms one global mesh) and exits with worker 0's exit code (0 done, 2 a configuration
# error, 143 preempted). Re-running the same command resumes from the newest checkpoint.
# Per-worker logs: $LOG_DIR/<name>/<worker>.log here (live), and $BUCKET/<name>/logs/ (copied
# by every worker when it ends); worker 0's log is also shown here.
#   launch/run.sh gin/iqlearn_xl.gin my_experiment [extra --gin_bindings=...]
set -euo pipefail
here=$(dirname "$0")
. "$here/config.sh"
. "$here/lib.sh"
GIN_FILE=${1:?usage: launch/run.sh GIN_FILE EXPERIMENT_NAME [EXTRA_FLAGS...]}
NAME=${2:?usage: launch/run.sh GIN_FILE EXPERIMENT_NAME [EXTRA_FLAGS...]}
shift 2
EXTRA=""
if (($#)); then
  EXTRA=$(printf " %q" "$@")
fi
RUN_DIR="$BUCKET/$NAME"
logs="$LOG_DIR/$(run_key "$NAME")"
mkdir -p "$logs"
touch "$logs/0.log"
tail -n 0 -f "$logs/0.log" &
tailer=$!
trap 'kill "$tailer" 2>/dev/null' EXIT
rc=0
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
  --output-directory="$logs" --command="
  cd irl_lm && git pull -q && launch/worker.sh train '$RUN_DIR' '$GIN_FILE' $EXTRA
" || rc=$?
# gcloud's own exit code does not say which worker failed how: ask worker 0.
code=$(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0 \
  --command="irl_lm/launch/worker.sh exit-code '$RUN_DIR'" 2>/dev/null || true)
if [[ "$code" =~ ^[0-9]+$ ]]; then
  rc=$code
elif [[ "$rc" == 0 ]]; then
  rc=255  # no exit code recorded: the worker was lost
fi
exit "$rc"
