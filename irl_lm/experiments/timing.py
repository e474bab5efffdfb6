r"""Sampling time vs update time of the tiny model (Table 1's sampling column).

  python -m irl_lm.experiments.timing --out=results/quick/timing.json

Runs ``benchmarks/decode.py``'s `run_case` (one jitted `temperature_sample` batch vs one
IQLearn train step of the same shape, medians after a warm-up) for the quick sweep's shapes
and writes {'sample_s', 'train_step_s', 'ratio', 'case': {...}, 'repeats'} as JSON. Run it as
a subprocess: it imports JAX.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import Any, Optional, Sequence

from irl_lm.experiments import sweeps

BENCHMARK = os.path.join(sweeps.REPO_ROOT, "benchmarks", "decode.py")


def measure(*, batch: int = 32, inputs: int = 128, new_tokens: int = 32, vocab: int = 4096,
            size: str = "tiny", repeats: int = 3) -> dict[str, Any]:
  """Seconds of one sampled batch and one train step (float32, random parameters).

  Raises:
    FileNotFoundError: the checkout has no benchmarks/decode.py.
  """
  spec = importlib.util.spec_from_file_location("irl_lm_benchmark_decode", BENCHMARK)
  if spec is None or not os.path.isfile(BENCHMARK):
    raise FileNotFoundError(f"{BENCHMARK} not found (a source checkout has it)")
  bench = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = bench  # its dataclasses look their module up there
  spec.loader.exec_module(bench)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  case = bench.Case("quick", size, batch=batch, inputs=inputs, new_tokens=new_tokens,
                    vocab=vocab)
  # The no-cache baselines are not needed here: time a single step of them.
  r = bench.run_case(case, dtype=jnp.float32, repeats=repeats, no_cache_steps=1)
  return {"sample_s": r["sample_s"], "train_step_s": r["train_step_s"], "ratio": r["ratio"],
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
