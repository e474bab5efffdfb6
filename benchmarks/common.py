"""What the benchmarks share: shapes, synthetic batches, a jitted T5 train step, interleaved timing,
XLA's cost analysis and child processes.

Shapes: B batch, L input length, T target length, V vocabulary.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

# The train step and batches `python -m irl_lm.experiments.timing` times too.
from irl_lm.experiments.timing import Case, synthetic_batch, t5_model, t5_train_step  # noqa: F401


CASES = {
    # gin/iqlearn_tiny.gin's shapes (the built-in task's 4096-piece vocabulary).
    "tiny": Case("tiny", "tiny", batch=32, inputs=128, targets=32, vocab=4096),
    # T5 1.1 small with T5's vocabulary: B 8, L 512, T 128.
    "small": Case("small", "small", batch=8, inputs=512, targets=128, vocab=32128),
}


def activation_dtype(name: str = "auto") -> Any:
  """float32 on CPU (bfloat16 matmuls are slow there), bfloat16 on accelerators."""
  if name == "auto":
    name = "float32" if jax.devices()[0].platform == "cpu" else "bfloat16"
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def interleaved_medians(fns: Mapping[str, Callable[[], Any]], rounds: int, *,
                        warmup: bool = True, seed: int = 0) -> dict[str, dict[str, float]]:
  """Runs every fn once (compile), then `rounds` rounds in which each runs once, in a new random
  order per round, so a change of machine load hits them all alike.

  Returns:
    {name: {'median': s, 'min': s, 'times': [s, ...]}}.
  """
  if warmup:
    for fn in fns.values():
      fn()
  times: dict[str, list[float]] = {name: [] for name in fns}
  order = list(fns)
  shuffler = random.Random(seed)
  for _ in range(rounds):
    shuffler.shuffle(order)
    for name in order:
      start = time.perf_counter()
      fns[name]()
      times[name].append(time.perf_counter() - start)
  return {name: {"median": statistics.median(ts), "min": min(ts), "times": ts}
          for name, ts in times.items()}


def cost_analysis(compiled: Any) -> dict[str, float]:
  """XLA's {'flops', 'bytes'} of a compiled program (0 when the backend reports none)."""
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else (analysis or {})
  return {"flops": float(analysis.get("flops", 0.0)),
          "bytes": float(analysis.get("bytes accessed", 0.0))}


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json_child(module: str, args: list[str], env: Mapping[str, str]) -> dict[str, Any]:
  """Runs `python -m module args` (from the checkout's root) with `env` and returns the JSON
  object on its last stdout line, or {'error': its last stderr line} when it fails (benchmarks
  that need a fresh process per variant: an allocator is fixed when a process starts)."""
  out = subprocess.run([sys.executable, "-m", module, *args], env=dict(env), cwd=ROOT,
                       capture_output=True, text=True)
  if out.returncode != 0:
    return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1]}
  return json.loads(out.stdout.strip().splitlines()[-1])
