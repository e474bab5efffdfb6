#!/usr/bin/env bash
# Runs an experiment until it finishes, through preemptions: after each exit it decides
#   0                 done: stop.
#   2                 a configuration error (one sentence in the log): stop, unless it is the
#                     run directory's lock held by the job that was just preempted (its
#                     heartbeat goes stale after run.lock_stale_minutes): then wait and retry.
#   143, 137, 255     preempted (SIGTERM: the trainer saved a checkpoint at the current step),
#                     killed, or the slice/ssh lost: recreate the slice if it is gone (queued
#                     resource, spot unless SPOT=0) and rerun, which resumes from the newest
#                     intact checkpoint.
#   anything else     a crash: rerun, at most MAX_FAILURES times in a row.
# At most MAX_ATTEMPTS runs in all.
#   launch/auto_resume.sh gin/iqlearn_xl.gin my_experiment [extra --gin_bindings=...]
set -uo pipefail
here=$(dirname "$0")
. "$here/config.sh"
. "$here/lib.sh"
: "${MAX_ATTEMPTS:=100}" "${MAX_FAILURES:=3}" "${RETRY_SECONDS:=60}" "${LOCK_WAIT_SECONDS:=300}"
GIN_FILE=${1:?usage: launch/auto_resume.sh GIN_FILE EXPERIMENT_NAME [EXTRA_FLAGS...]}
NAME=${2:?usage: launch/auto_resume.sh GIN_FILE EXPERIMENT_NAME [EXTRA_FLAGS...]}

say() { echo "[auto_resume $(date -u +%FT%TZ)] $*" >&2; }

# (Re)creates the slice when it is not READY (spot slices disappear when preempted).
ensure_slice() {
  local state
  state=$(tpu_state)
  [[ "$state" == READY ]] && return 0
  say "slice $TPU_NAME is $state: requesting it again"
  if [[ "$(queued_state)" != NONE ]]; then
    gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE" --zone="$ZONE" --force \
      --quiet || return 1
  elif [[ "$state" != NONE ]]; then
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet || return 1
  fi
  "$here/queued.sh"
}

failures=0
preempted=0
for ((attempt = 1; attempt <= MAX_ATTEMPTS; attempt++)); do
  if ! ensure_slice; then
    say "could not get the slice; retrying in $RETRY_SECONDS s"
    sleep "$RETRY_SECONDS"
    continue
  fi
  say "attempt $attempt: launch/run.sh $*"
  rc=0
  "$here/run.sh" "$@" || rc=$?
  case "$rc" in
    0)
      say "finished"
      exit 0 ;;
    2)
      if ((preempted)) && grep -qs "is in use by another job" \
          "$LOG_DIR/$(run_key "$NAME")/0.log"; then
        say "the preempted job's lock is not stale yet; waiting $LOCK_WAIT_SECONDS s"
        sleep "$LOCK_WAIT_SECONDS"
        continue
      fi
      say "configuration error (exit 2; see $LOG_DIR/$(run_key "$NAME")/0.log): not retrying"
      exit 2 ;;
    143|137|255)
      preempted=1
      failures=0
      say "preempted or lost (exit $rc): resuming" ;;
    *)
      preempted=0
      failures=$((failures + 1))
      if ((failures > MAX_FAILURES)); then
        say "failed $failures times in a row (exit $rc): giving up"
        exit "$rc"
      fi
      say "failed (exit $rc; failure $failures of at most $MAX_FAILURES): rerunning" ;;
  esac
  sleep "$RETRY_SECONDS"
done
say "gave up after $MAX_ATTEMPTS attempts"
exit 1
