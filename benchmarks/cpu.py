r"""Each CPU rewrite (irl_lm/cpu/xla.py) against jax's own primitive, side by side in one run.

  python -m benchmarks cpu                               # T5 1.1 tiny and small
  python -m benchmarks cpu --cases=tiny --rounds=9 --rewrites=gumbel,argmax

For each rewrite, both programs are traced in this process (the primitive inside
`xla.without(name)`) and run in interleaved rounds (`common.interleaved_medians`, a new random
order per round); printed: the medians with -> without, their ratio (below 1: the rewrite is
faster) and a check that both compute the same thing.
* dot: the MLE + AdamW train step (float32); the first step's loss and XLA's temporaries.
* argmax, gumbel: `decoding.temperature_sample` of T tokens at temperature 1, EOS off; the
  sampled tokens must be identical.
* remat: the train step with remat_policy 'full'; XLA's temporaries and the first loss.
The host allocator is measured by `python -m benchmarks host_allocator` (one process each).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from typing import Any, Callable

import jax
import numpy as np

from benchmarks import common
from irl_lm import decoding
from irl_lm.cpu import xla
from irl_lm.training import objectives


def _step(case: common.Case, **config: Any) -> tuple[Callable[[], Any], str]:
  built = common.t5_train_step(case, objectives.MLE(), optimizer="adamw", **config)
  loss = float(built["run"]()["loss"])
  with built["partitioner"].activate():
    temporaries = built["lowered"]().compile().memory_analysis().temp_size_in_bytes / 2**20
  return built["run"], f"first loss {loss:.6f}, temporaries {temporaries:.0f} MB"


def _sampler(case: common.Case, built: dict[str, Any]) -> tuple[Callable[[], Any], np.ndarray]:
  params, prompts, key = built["params"], built["batch"]["encoder_input_tokens"], jax.random.key(0)
  sample = jax.jit(functools.partial(decoding.temperature_sample, built["model"],
                                     max_decode_length=case.targets, temperature=1.0, eos_id=-1))
  tokens = np.asarray(sample(params, prompts, key).tokens)
  return lambda: jax.block_until_ready(sample(params, prompts, key).tokens), tokens


def compare(case: common.Case, name: str, rounds: int) -> str:
  """One line: rewrite `name` against jax's primitive on `case`."""
  runs, checks = {}, {}
  sampling_model = None
  if name in ("argmax", "gumbel"):
    sampling_model = common.t5_train_step(case, objectives.MLE(), optimizer="adamw")
  for label in ("with", "without"):
    with xla.without(name) if label == "without" else contextlib.nullcontext():
      if name == "dot":
        runs[label], checks[label] = _step(case)
      elif name == "remat":
        runs[label], checks[label] = _step(case, remat_policy="full")
      else:
        runs[label], checks[label] = _sampler(case, sampling_model)
  times = common.interleaved_medians(runs, rounds, warmup=False)
  a, b = times["with"]["median"], times["without"]["median"]
  if name in ("argmax", "gumbel"):
    same = "tokens identical" if np.array_equal(checks["with"], checks["without"]) else (
        "tokens DIFFERENT")
  else:
    same = f"with: {checks['with']}; without: {checks['without']}"
  return (f"  {name:7} {a * 1e3:9.1f} ms with, {b * 1e3:9.1f} ms without: {a / b:.3f}x; "
          f"{same}")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="tiny,small")
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--rewrites", default=",".join(xla.REWRITES))
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} CPU threads; float32; medians of {args.rounds} interleaved rounds; "
        f"host allocator {os.environ.get('LD_PRELOAD') or 'of the system'}")
  for case_name in args.cases.split(","):
    case = common.CASES[case_name]
    print(f"\n{case.name}: T5 1.1 {case.size}, B={case.batch}, L={case.inputs}, "
          f"T={case.targets}, V={case.vocab}", flush=True)
    for name in args.rewrites.split(","):
      print(compare(case, name, args.rounds), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
