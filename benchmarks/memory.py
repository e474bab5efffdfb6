r"""Activation memory vs speed of rematerialisation (`remat_policy`) and gradient accumulation
(`TrainSettings.microbatches`), from one run.

  python -m benchmarks memory                       # T5 1.1 small (B 8, L 512, T 128)
  python -m benchmarks memory --cases=tiny --rounds=5

For each policy ('none', 'minimal', 'dots', 'full'; `irl_lm.models.layers.REMAT_POLICIES`): the
compiled MLE + AdamW train step's memory as XLA accounts it (`memory_analysis()`: arguments, i.e.
the train state and batch, and temporaries, i.e. the activations kept for the backward pass and
scratch), and its median step time over interleaved rounds, as ratios to 'none'; then the same
for 2 and 4 microbatches without remat.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax

from benchmarks import common

from irl_lm.models import layers
from irl_lm.training import objectives


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="small")
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"float32; MLE + AdamW; medians of {args.rounds} interleaved rounds")
  for name in args.cases.split(","):
    case = common.CASES[name]
    built = {policy: common.t5_train_step(case, objectives.MLE(), optimizer="adamw",
                                          remat_policy=policy)
             for policy in layers.REMAT_POLICIES}
    for k in (2, 4):
      built[f"micro{k}"] = common.t5_train_step(case, objectives.MLE(), optimizer="adamw",
                                                microbatches=k)
    memory = {}
    for policy, b in built.items():
      with b["partitioner"].activate():
        analysis = b["lowered"]().compile().memory_analysis()
      memory[policy] = (analysis.argument_size_in_bytes, analysis.temp_size_in_bytes)
    times = common.interleaved_medians({p: b["run"] for p, b in built.items()}, args.rounds)
    print(f"\n{case.name}: T5 1.1 {case.size}, B={case.batch}, L={case.inputs}, "
          f"T={case.targets}, V={case.vocab}")
    print(f"  {'policy':8} {'state+batch':>12} {'temporaries':>12} {'temp ratio':>10} "
          f"{'step':>8} {'time ratio':>10}")
    base_temp, base_time = memory["none"][1], times["none"]["median"]
    for policy in built:
      args_b, temp_b = memory[policy]
      t = times[policy]["median"]
      print(f"  {policy:8} {args_b / 2**20:>10.0f}MB {temp_b / 2**20:>10.0f}MB "
            f"{temp_b / base_temp:>10.2f} {t * 1e3:>6.0f}ms {t / base_time:>10.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
