#!/usr/bin/env bash
# Runs on every TPU worker (launch/run.sh starts it there): one training command with
# --distributed, its output appended to a per-worker log ~/irl_lm_logs/<run>/worker-<i>.log
# that is copied to <run_dir>/logs/ when it ends (also on failure), and the command's own exit
# code (0 done, 2 a configuration error, 143 preempted: it got SIGTERM and saved a checkpoint).
#   launch/worker.sh train RUN_DIR GIN_FILE [EXTRA_FLAGS...]
#   launch/worker.sh upload-logs RUN_DIR     (copy the logs so far to <run_dir>/logs/)
#   launch/worker.sh exit-code RUN_DIR       (the last command's exit code; empty if running)
set -uo pipefail
ACTION=${1:?usage: launch/worker.sh train|upload-logs|exit-code RUN_DIR [GIN_FILE FLAGS...]}
RUN_DIR=${2:?usage: launch/worker.sh train|upload-logs|exit-code RUN_DIR [GIN_FILE FLAGS...]}
shift 2
worker=$(curl -sf -H 'Metadata-Flavor: Google' \
  http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number \
  2>/dev/null || hostname)
key=${RUN_DIR//\//_}
log_dir="$HOME/irl_lm_logs/${key//:/_}"
log="$log_dir/worker-$worker.log"
mkdir -p "$log_dir"

upload_logs() {
  case "$RUN_DIR" in
    gs://*) gcloud storage cp "$log" "$RUN_DIR/logs/worker-$worker.log" >/dev/null 2>&1 ;;
    *) mkdir -p "$RUN_DIR/logs" && cp "$log" "$RUN_DIR/logs/worker-$worker.log" ;;
  esac
}

case "$ACTION" in
  upload-logs) upload_logs; exit $? ;;
  exit-code) cat "$log_dir/worker-$worker.rc" 2>/dev/null; exit 0 ;;
  train) ;;
  *) echo "unknown action $ACTION" >&2; exit 2 ;;
esac
GIN_FILE=${1:?usage: launch/worker.sh train RUN_DIR GIN_FILE [EXTRA_FLAGS...]}
shift
rm -f "$log_dir/worker-$worker.rc"
echo "=== $(date -u +%FT%TZ) worker $worker: $GIN_FILE $*" >>"$log"
cd "$HOME/irl_lm" || exit 1
. .venv/bin/activate || exit 1
start=$(($(stat -c %s "$log") + 1))
trap '' HUP  # a dropped ssh connection must not stop training
python -m irl_lm.main --distributed --gin_file="$GIN_FILE" \
  --gin_bindings="run.run_dir = '$RUN_DIR'" "$@" >>"$log" 2>&1 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT  # pass a preemption notice on to the trainer
tail -c "+$start" -f "$log" --pid="$pid" &  # live output (gcloud collects it per worker)
rc=0
wait "$pid" || rc=$?
while kill -0 "$pid" 2>/dev/null; do  # a trap ended `wait` early: wait for the real exit code
  rc=0
  wait "$pid" || rc=$?
done
echo "=== $(date -u +%FT%TZ) worker $worker: exit code $rc" >>"$log"
echo "$rc" >"$log_dir/worker-$worker.rc"
upload_logs || echo "could not copy $log to $RUN_DIR/logs/" >&2
exit "$rc"
