#!/usr/bin/env bash
# Runs one experiment on every worker of the pod (each worker runs the same command; JAX
# forms one global mesh). Re-running the same command resumes from the newest checkpoint.
#   launch/run.sh gin/iqlearn_xl.gin my_experiment [extra --gin_bindings=...]
set -euo pipefail
. "$(dirname "$0")/config.sh"
GIN_FILE=${1:?usage: launch/run.sh GIN_FILE EXPERIMENT_NAME [EXTRA_FLAGS...]}
NAME=${2:?usage: launch/run.sh GIN_FILE EXPERIMENT_NAME [EXTRA_FLAGS...]}
shift 2
EXTRA=$(printf " %q" "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  cd irl_lm && git pull -q && . .venv/bin/activate &&
  python -m irl_lm.main --distributed --gin_file='$GIN_FILE' \
    --gin_bindings=\"run.run_dir = '$BUCKET/$NAME'\" $EXTRA 2>&1 | tee -a ~/$NAME.log
"
