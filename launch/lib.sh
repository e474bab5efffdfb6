# Functions shared by the launch scripts (sourced after config.sh).

# The slice's state as the TPU API reports it (READY, CREATING, PREEMPTED, ...; NONE if absent).
tpu_state() {
  gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone="$ZONE" --format='value(state)' \
    2>/dev/null || echo NONE
}

# The queued resource's state (WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE, SUSPENDED, FAILED,
# ...; NONE if absent).
queued_state() {
  gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE" --zone="$ZONE" \
    --format='value(state.state)' 2>/dev/null || echo NONE
}

# Blocks until the queued resource is ACTIVE; fails if it ends up FAILED or SUSPENDED.
wait_active() {
  local state
  while true; do
    state=$(queued_state)
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED|SUSPENDED|NONE)
        echo "queued resource $QUEUED_RESOURCE is $state" >&2
        return 1 ;;
      *)
        echo "queued resource $QUEUED_RESOURCE: $state, waiting" >&2
        sleep "${POLL_SECONDS:-60}" ;;
    esac
  done
}

# A file-name-safe key for a run name (names may hold slashes: sweep/point/seed0).
run_key() {
  local key=${1//\//_}
  echo "${key//:/_}"
}
