r"""XLA CPU flags that might speed up a train step, each against the default, from one run.

  python benchmarks/xla_flags.py                     # T5 1.1 small (the issue's shapes)
  python benchmarks/xla_flags.py --cases=tiny --passes=3 --steps=5
  python benchmarks/xla_flags.py --variants=ynn_off,concurrency --steps=3

XLA_FLAGS is read once, when JAX starts its backend, so every variant runs in its own process:
build the MLE + AdamW step (float32), one step to compile, then `--steps` timed steps. The
variants run in turn, `--passes` times over (the order rotated each pass), so a change of machine
load reaches them all; a variant's time is the median over all its steps, its ratio is to the
default's. The first step's loss and gradient norm of each variant are compared with the
default's: a flag that changes results beyond float tolerance is marked, not recommended.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# name -> flags appended to XLA_FLAGS.
VARIANTS = {
    "default": "",
    "ynn_off (Eigen / XNNPACK dots)": "--xla_cpu_experimental_ynn_fusion_type=",
    "xnnpack_off": "--xla_cpu_use_xnnpack=false",
    "onednn": "--xla_cpu_use_onednn=true",
    "vector_width_512": "--xla_cpu_prefer_vector_width=512",
    "concurrency_scheduler": "--xla_cpu_enable_concurrency_optimized_scheduler=true",
}


def child(case_name: str, steps: int) -> None:
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import common  # pylint: disable=g-import-not-at-top
  from irl_lm.training import objectives  # pylint: disable=g-import-not-at-top
  built = common.t5_train_step(common.CASES[case_name], objectives.MLE(), optimizer="adamw")
  first = built["run"]()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    built["run"]()
    times.append(time.perf_counter() - start)
  print(json.dumps({"times": times, "loss": float(first["loss"]),
                    "grad_norm": float(first["grad_norm"])}))


def run_variant(flags: str, case_name: str, steps: int) -> dict:
  import common  # pylint: disable=g-import-not-at-top
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
  return common.run_json_child(__file__, ["--child", case_name, "--steps", str(steps)], env)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="small")
  parser.add_argument("--passes", type=int, default=2)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--variants", default=",".join(VARIANTS),
                      help="comma-separated names from VARIANTS (prefixes work)")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    child(args.child, args.steps)
    return 0
  print(f"MLE + AdamW, float32; {args.passes} passes x {args.steps} steps per variant, each "
        "variant in its own process; ratio = variant / default (< 1: faster)")
  for case_name in args.cases.split(","):
    wanted = args.variants.split(",")
    names = ["default"] + [n for n in VARIANTS if n != "default" and
                           any(n.startswith(w) for w in wanted)]
    results: dict[str, list[dict]] = {name: [] for name in names}
    for p in range(args.passes):
      for name in names[p % len(names):] + names[:p % len(names)]:
        results[name].append(run_variant(VARIANTS[name], case_name, args.steps))
    print(f"\n{case_name}:")
    base = results["default"]
    base_time = statistics.median(t for r in base for t in r["times"])
    for name in names:
      errors = [r["error"] for r in results[name] if "error" in r]
      if errors:
        print(f"  {name:32} failed: {errors[0][:100]}")
        continue
      t = statistics.median(x for r in results[name] for x in r["times"])
      same = all(abs(r["loss"] - base[0]["loss"]) <= 1e-4 * abs(base[0]["loss"]) and
                 abs(r["grad_norm"] - base[0]["grad_norm"]) <= 1e-3 * abs(base[0]["grad_norm"])
                 for r in results[name])
      print(f"  {name:32} {t * 1e3:8.0f} ms  {t / base_time:5.2f}x  "
            f"{'same results' if same else 'RESULTS DIFFER'}  {VARIANTS[name]}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
