#!/usr/bin/env bash
# Gathers, on a machine with network, the wheels benchmarks/accelerator.sh installs on a GPU
# machine without one: irl_lm's own wheel and those of its core requirements that a current GPU
# image (Python 3.12; jax with its CUDA plugin, flax, optax, orbax-checkpoint, numpy, scipy,
# sentencepiece, sacrebleu, safetensors, tokenizers, absl-py, torch and transformers installed)
# lacks, with their own requirements. Versions from constraints/py313.txt; at most 64 MiB.
#
#   benchmarks/accelerator_wheels.sh [FOLDER]      # default benchmarks/.accelerator_wheels
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/.accelerator_wheels}
PY=${PYTHON:-python3}
LIMIT_MIB=64

rm -rf "$OUT"
mkdir -p "$OUT"
# Wheels for CPython 3.12 on x86-64 Linux, with their requirements (nltk, which rouge-score
# needs, brings click, joblib, regex, tqdm, defusedxml).
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 -c constraints/py313.txt -d "$OUT" \
  gin-config nltk six absl-py
# rouge-score publishes only a source archive; its wheel (pure Python) is built here.
"$PY" -m pip wheel -q --no-deps -c constraints/py313.txt -w "$OUT" rouge-score
"$PY" -m pip wheel -q --no-deps -w "$OUT" .

ls -1 "$OUT"
SIZE_MIB=$(( $(du -sk "$OUT" | cut -f1) / 1024 ))
echo "$OUT: ${SIZE_MIB} MiB"
if (( SIZE_MIB >= LIMIT_MIB )); then
  echo "error: $OUT holds ${SIZE_MIB} MiB, over the ${LIMIT_MIB} MiB a device run carries;" \
       "leave out wheels the GPU image already has." >&2
  exit 1
fi
