r"""Sampling time vs update time of the tiny model (Table 1's sampling column).

  python -m irl_lm.experiments.timing --out=results/docstring/timing.json

Times one jitted `temperature_sample` batch (temperature 1, exactly `new_tokens` tokens) and one
IQLearn + Adafactor train step of the same shape, medians after a warm-up, for the quick sweep's
shapes, and writes {'sample_s', 'train_step_s', 'ratio', 'case': {...}, 'repeats'} as JSON. Run
it as a subprocess: it imports JAX. `t5_train_step` and `synthetic_batch` are also the set-up of
`python -m benchmarks` in a checkout.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irl_lm import decoding
from irl_lm.models import t5
from irl_lm.partitioning import Partitioner
from irl_lm.training import objectives, optimizers
from irl_lm.training import state as state_lib
from irl_lm.training import step as step_lib


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark shape: T5 1.1 size, batch B, input length L, target length T, vocabulary V."""
  name: str
  size: str
  batch: int
  inputs: int
  targets: int
  vocab: int


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


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """Runs `fn` (which blocks until its result is ready) once to compile, then `repeats` times;
  the median wall time in seconds."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(*, batch: int = 32, inputs: int = 128, new_tokens: int = 32, vocab: int = 4096,
            size: str = "tiny", repeats: int = 3) -> dict[str, Any]:
  """Seconds of one sampled batch and one train step (float32, random parameters)."""
  case = Case("quick", size, batch=batch, inputs=inputs, targets=new_tokens, vocab=vocab)
  built = t5_train_step(case, objectives.IQLearn(), optimizer="adafactor", dtype=jnp.float32)
  params, prompts, key = built["params"], built["batch"]["encoder_input_tokens"], jax.random.key(0)
  sample = jax.jit(functools.partial(decoding.temperature_sample, built["model"],
                                     max_decode_length=new_tokens, temperature=1.0, eos_id=-1))
  sample_s = median_seconds(lambda: jax.block_until_ready(sample(params, prompts, key)), repeats)
  train_step_s = median_seconds(built["run"], repeats)
  return {"sample_s": sample_s, "train_step_s": train_step_s, "ratio": sample_s / train_step_s,
          "case": {"size": size, "batch": batch, "inputs": inputs, "new_tokens": new_tokens,
                   "vocab": vocab}, "repeats": repeats,
          "note": "temperature_sample (T=1, exactly new_tokens tokens) vs one IQLearn + "
                  "Adafactor step, medians after a warm-up, random parameters"}


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch", type=int, default=32)
  args = parser.parse_args(argv)
  result = measure(repeats=args.repeats, batch=args.batch)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
