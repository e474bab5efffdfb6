"""What the benchmarks share: shapes, synthetic batches, a jitted T5 train step, interleaved timing.

Shapes: B batch, L input length, T target length, V vocabulary.
"""
from __future__ import annotations

import dataclasses
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from irl_lm.models import t5  # noqa: E402
from irl_lm.partitioning import Partitioner  # noqa: E402
from irl_lm.training import optimizers  # noqa: E402
from irl_lm.training import state as state_lib  # noqa: E402
from irl_lm.training import step as step_lib  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark shape: T5 1.1 size, batch B, input length L, target length T, vocabulary V."""
  name: str
  size: str
  batch: int
  inputs: int
  targets: int
  vocab: int


CASES = {
    # gin/iqlearn_tiny.gin's shapes (the built-in task's 4096-piece vocabulary).
    "tiny": Case("tiny", "tiny", batch=32, inputs=128, targets=32, vocab=4096),
    # T5 1.1 small with T5's vocabulary: the performance issue's shapes.
    "small": Case("small", "small", batch=8, inputs=512, targets=128, vocab=32128),
}


def activation_dtype(name: str = "auto") -> Any:
  """float32 on CPU (bfloat16 matmuls are slow there), bfloat16 on accelerators."""
  if name == "auto":
    name = "float32" if jax.devices()[0].platform == "cpu" else "bfloat16"
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def synthetic_batch(case: Case, seed: int = 0) -> dict[str, np.ndarray]:
  """T5 features [B, L] / [B, T]: inputs of 1/2..1 of L, EOS-terminated targets of 1/2..1 of T."""
  rs = np.random.RandomState(seed)
  b, l, t = case.batch, case.inputs, case.targets
  inputs = rs.randint(3, case.vocab, size=(b, l)).astype(np.int32)
  input_lengths = rs.randint(l // 2, l + 1, size=(b,))
  inputs = np.where(np.arange(l)[None] < input_lengths[:, None], inputs, 0)
  lengths = rs.randint(t // 2, t + 1, size=(b,))
  weights = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
  targets = np.where(weights > 0, rs.randint(3, case.vocab, size=(b, t)), 0).astype(np.int32)
  targets[np.arange(b), lengths - 1] = 1
  return {"encoder_input_tokens": inputs,
          "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
          "decoder_target_tokens": targets,
          "decoder_loss_weights": weights}


def t5_model(case: Case, dtype: Any, **overrides: Any) -> t5.EncoderDecoderModel:
  return t5.EncoderDecoderModel(t5.t5_1_1_config(case.size, vocab_size=case.vocab,
                                                 activation_dtype=dtype, **overrides))


def t5_train_step(case: Case, objective: Any, *, optimizer: str = "adafactor",
                  learning_rate: float = 1e-3, dtype: Any = jnp.float32,
                  partitioner: Partitioner | None = None, microbatches: int = 1,
                  copy_params: bool = True, **config: Any) -> dict[str, Any]:
  """A ready-to-run jitted train step of T5 1.1 `case.size` on a synthetic batch (`config`:
  T5Config overrides, e.g. remat_policy).

  Returns:
    {'run': () -> metrics (one blocking step, state kept inside), 'params': the initial
    parameters (a copy; None unless `copy_params`), 'current_params': () -> the state's
    parameters now, 'model', 'batch' (sharded), 'lowered': the step lowered for XLA's cost
    analysis, 'partitioner'}.
  """
  partitioner = partitioner or Partitioner((-1, 1))
  model = t5_model(case, dtype, **config)
  schedule = optimizers.make_schedule("constant", learning_rate=learning_rate)
  tx = optimizers.make_optimizer(optimizer, schedule=schedule)
  shapes = {"encoder_input_tokens": (case.batch, case.inputs),
            "decoder_input_tokens": (case.batch, case.targets)}
  layout = state_lib.build_state_layout(model, tx, partitioner, shapes, objective=objective)
  step = step_lib.make_train_step(model=model, objective=objective, tx=tx, schedule=schedule,
                                  partitioner=partitioner, shardings=layout.shardings,
                                  microbatches=microbatches)
  batch = {k: jax.device_put(v, partitioner.batch_sharding())
           for k, v in synthetic_batch(case).items()}
  holder = {"state": layout.init_fn()}
  params = jax.tree.map(jnp.copy, holder["state"].params) if copy_params else None

  def run():
    holder["state"], metrics = step(holder["state"], batch)
    return jax.block_until_ready(metrics)

  return {"run": run, "params": params, "current_params": lambda: holder["state"].params,
          "model": model, "batch": batch,
          "lowered": lambda: step.lower(layout.abstract, batch), "partitioner": partitioner}


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


def run_json_child(script: str, args: list[str], env: Mapping[str, str]) -> dict[str, Any]:
  """Runs `python script args` with `env` and returns the JSON object on its last stdout line,
  or {'error': its last stderr line} when it fails (benchmarks that need a fresh process per
  variant: XLA flags and allocators are fixed when a process starts)."""
  out = subprocess.run([sys.executable, os.path.abspath(script), *args], env=dict(env),
                       capture_output=True, text=True)
  if out.returncode != 0:
    return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1]}
  return json.loads(out.stdout.strip().splitlines()[-1])
