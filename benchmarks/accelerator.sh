#!/usr/bin/env bash
# GPU check on one NVIDIA GPU machine without network whose Python 3.12 already has jax >= 0.11
# with its CUDA plugin, flax, optax, orbax-checkpoint, torch and transformers: installs irl_lm's
# core from the wheels benchmarks/accelerator_wheels.sh gathered, then runs
# benchmarks/accelerator.py (train-step time, tokens/s, MFU, IQLearn / MLE step ratio, sampling
# tokens/s and peak GPU memory of T5 1.1 base and the 1B decoder-only model, beside transformers
# + torch), within 8 minutes.
#
#   benchmarks/accelerator.sh [accelerator.py flags, e.g. --models=t5 --no-torch]
#   ACCELERATOR_WHEELS=/path/to/wheels PYTHON=python3.12 benchmarks/accelerator.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${ACCELERATOR_WHEELS:-benchmarks/.accelerator_wheels}
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! compgen -G "$WHEELS/irl_lm-*.whl" > /dev/null; then
  echo "error: no irl_lm wheel in $WHEELS; run benchmarks/accelerator_wheels.sh on a machine" \
       "with network and bring that folder along (or set ACCELERATOR_WHEELS)." >&2
  exit 2
fi
# Install beside the preinstalled packages: into the active virtual environment, else into a new
# one that sees the system's site-packages.
if ! "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
  VENV=${ACCELERATOR_VENV:-/tmp/irl_lm_accelerator_venv}
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv --system-site-packages "$VENV"
  PY="$VENV/bin/python"
fi
"$PY" -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/irl_lm-*.whl
"$PY" -m pip list 2>/dev/null | grep -E -i '^(irl.lm|jax|jaxlib|jax-cuda1[23]-plugin|flax|optax|orbax-checkpoint|torch|transformers) ' || true
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

# accelerator.py keeps to --budget_s (450 s by default); the timeout is the backstop.
timeout 480 "$PY" benchmarks/accelerator.py "$@"
