# Settings shared by the launch scripts; override any of them in the environment.
: "${TPU_NAME:=irl-lm-pod}"
: "${ZONE:=us-central2-b}"
: "${ACCELERATOR_TYPE:=v4-64}"
: "${TPU_SOFTWARE:=tpu-ubuntu2204-base}"
: "${QUEUED_RESOURCE:=${TPU_NAME}-qr}"   # queued-resource request behind the slice (queued.sh)
: "${SPOT:=1}"                           # 1: spot (preemptible, cheaper) capacity; 0: on demand
: "${LOG_DIR:=logs}"                     # local copies of the per-worker logs
: "${REPO_URL:?set REPO_URL to a git URL of this repository the TPU workers can clone}"
: "${BUCKET:?set BUCKET to a gs:// bucket for run directories, e.g. gs://my-bucket/irl_lm}"
