r"""Train-step time of every method, as ratios to MLE, on the same batch shape.

  python -m benchmarks step_time                          # tiny and small shapes
  python -m benchmarks step_time --cases=tiny --steps=20
  python -m benchmarks step_time --cases=small --small_steps=3

Methods (one `step.make_train_step` each, T5X's default optimiser Adafactor, state donated):
* mle: `objectives.MLE()`;
* iqlearn: offline IQLearn, `objectives.IQLearn(td_weight=0.1)`;
* online_in_step / online_two_stage: `objectives.IQLearnOnline(online_mix=0.1)`, sampling inside
  the jitted step, or in a separately jitted sampler feeding the step (`sample_in_step`);
* gail_in_step / gail_two_stage: `objectives.GAIL()` (every input sampled, a tiny discriminator,
  KL to the frozen initial policy), sampling placed as above.
Sampling is temperature 1 without filtering; with random parameters EOS is rare, so nearly every
sample runs to the full target length (the worst case).

Timing: every method is compiled and run once, then the methods take turns (in a new random
order each round), one step each, for `--steps` rounds (`--small_steps` for the small case), so
a change of machine load hits them all alike; printed are the median and the minimum (the least
disturbed by other processes on a shared machine), and XLA's cost analysis (flops, bytes
accessed) of each in-step program, a load-independent comparison of MLE and offline IQLearn.
Random parameters, float32 activations on CPU (bfloat16 is slow there), bfloat16 on
accelerators; a synthetic batch of real-length targets (3/4 of T on
average, EOS-terminated, padded).

The paper (T5-base, TPU): 189 ms per MLE update vs 196 ms per IQLearn update, ratio 1.04.
"""
from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import sys
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from irl_lm.models import t5
from irl_lm.training import objectives, optimizers
from irl_lm.training import state as state_lib
from irl_lm.training import step as step_lib
from irl_lm.partitioning import Partitioner
from benchmarks.common import CASES, Case, synthetic_batch


def methods(names: list[str]) -> dict[str, Any]:
  """The benchmarked objectives by name."""
  all_methods = {
      "mle": objectives.MLE(),
      "iqlearn": objectives.IQLearn(td_weight=0.1),
      "online_in_step": objectives.IQLearnOnline(td_weight=0.1, online_mix=0.1),
      "online_two_stage": objectives.IQLearnOnline(td_weight=0.1, online_mix=0.1,
                                                   sample_in_step=False),
      "gail_in_step": objectives.GAIL(),
      "gail_two_stage": objectives.GAIL(sample_in_step=False),
  }
  return {n: all_methods[n] for n in names}


def build(case: Case, objective: Any, partitioner: Partitioner, dtype: Any
          ) -> tuple[Callable[[], Any], Optional[dict[str, float]]]:
  """A closure running one (blocking) train step of `objective`, its state kept inside, and
  XLA's cost analysis of the whole step (None for a two-stage step, which is two programs)."""
  model = t5.EncoderDecoderModel(t5.t5_1_1_config(case.size, vocab_size=case.vocab,
                                                  activation_dtype=dtype))
  schedule = optimizers.make_schedule("constant", learning_rate=1e-3)
  tx = optimizers.make_optimizer("adafactor", schedule=schedule)
  shapes = {"encoder_input_tokens": (case.batch, case.inputs),
            "decoder_input_tokens": (case.batch, case.targets)}
  layout = state_lib.build_state_layout(model, tx, partitioner, shapes, objective=objective)
  step = step_lib.make_train_step(model=model, objective=objective, tx=tx, schedule=schedule,
                                  partitioner=partitioner, shardings=layout.shardings)
  batch = {k: jax.device_put(v, partitioner.batch_sharding())
           for k, v in synthetic_batch(case).items()}
  cost = None
  if getattr(objective, "sample_in_step", True):
    whole = jax.jit(functools.partial(step_lib.train_step, model=model, objective=objective,
                                      tx=tx, schedule=schedule))
    with partitioner.activate():
      analysis = whole.lower(layout.abstract, batch).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    cost = {"flops": float(analysis.get("flops", 0.0)),
            "bytes": float(analysis.get("bytes accessed", 0.0))}
  holder = {"state": layout.init_fn()}

  def run():
    holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready((holder["state"], metrics))
    return metrics

  return run, cost


def benchmark(case: Case, names: list[str], rounds: int, dtype: Any
              ) -> dict[str, dict[str, Any]]:
  """Per method: median and min seconds per step (compiled first, timed in interleaved
  rounds) and XLA's cost analysis."""
  partitioner = Partitioner((-1, 1))
  runs, costs = {}, {}
  for name, objective in methods(names).items():
    start = time.perf_counter()
    runs[name], costs[name] = build(case, objective, partitioner, dtype)
    runs[name]()  # compile and run once
    print(f"  {name}: compiled and ran once in {time.perf_counter() - start:.1f} s",
          flush=True)
  times: dict[str, list[float]] = {name: [] for name in runs}
  order = list(runs)
  shuffler = random.Random(0)
  for _ in range(rounds):
    shuffler.shuffle(order)  # no method always runs right after the same other one
    for name in order:
      start = time.perf_counter()
      runs[name]()
      times[name].append(time.perf_counter() - start)
  return {name: {"median": statistics.median(ts), "min": min(ts), "cost": costs[name]}
          for name, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cases", default="tiny,small", help="comma-separated: tiny, small")
  parser.add_argument("--methods", default=",".join(methods(list(
      ["mle", "iqlearn", "online_in_step", "online_two_stage", "gail_in_step",
       "gail_two_stage"]))))
  parser.add_argument("--steps", type=int, default=15, help="timed rounds (tiny)")
  parser.add_argument("--small_steps", type=int, default=3, help="timed rounds (small)")
  parser.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: float32 "
                      "on CPU, bfloat16 elsewhere)")
  args = parser.parse_args(argv)
  platform = jax.devices()[0].platform
  dtype_name = args.dtype or ("float32" if platform == "cpu" else "bfloat16")
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype_name]
  names = args.methods.split(",")
  if "mle" not in names:
    names.insert(0, "mle")
  print(f"devices: {len(jax.devices())} x {jax.devices()[0].device_kind}; activations "
        f"{dtype_name}; optimiser Adafactor; medians of interleaved rounds")
  for case_name in args.cases.split(","):
    case = CASES[case_name]
    rounds = args.steps if case_name == "tiny" else args.small_steps
    print(f"\n{case.name}: T5 1.1 {case.size}, B={case.batch}, L={case.inputs}, "
          f"T={case.targets}, V={case.vocab}; {rounds} timed rounds", flush=True)
    results = benchmark(case, names, rounds, dtype)
    base = results["mle"]
    print(f"  {'method':<18} {'median ms':>10} {'ratio':>7} {'min ms':>9} {'ratio':>7}"
          f" {'XLA flops':>10} {'XLA bytes':>10}")
    for name, r in results.items():
      cost = r["cost"]
      flops = f"{cost['flops'] / base['cost']['flops']:.3f}" if cost else "-"
      nbytes = f"{cost['bytes'] / base['cost']['bytes']:.3f}" if cost else "-"
      print(f"  {name:<18} {1e3 * r['median']:>10.1f} {r['median'] / base['median']:>7.3f}"
            f" {1e3 * r['min']:>9.1f} {r['min'] / base['min']:>7.3f} {flops:>10} {nbytes:>10}")
    print("  (ratios to MLE; XLA flops/bytes: the compiled step's cost analysis, which counts a "
          "while loop's body once, so it leaves out most of the sampling)")


if __name__ == "__main__":
  main()
