r"""The host's memory allocator under a train step: glibc's malloc vs tcmalloc (vs jemalloc).

  python -m benchmarks host_allocator                          # T5 1.1 small, MLE
  python -m benchmarks host_allocator --cases=tiny --objectives=mle,iqlearn --passes=3

An allocator is fixed when a process starts, so each runs in its own process (LD_PRELOAD):
build the step (float32, AdamW), two steps to compile and warm up, then `--steps` timed steps,
each with its kernel (system) CPU time and its minor page faults from getrusage. Allocators run
in turn, `--passes` times over (the order rotated each pass), so a change of machine load reaches
them all; an allocator's time is the median over all its steps, its ratio is to glibc's. The
first step's loss must be the same under every allocator (it is the same program).

Candidates: 'system' (what the process has: glibc's malloc on Debian), 'tcmalloc' (what
`irl_lm.main` preloads when installed, irl_lm/host_allocator.py) and 'jemalloc' with page
purging off (MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1; with jemalloc's default decay
it faults like glibc), each only when its library is installed
(`apt-get install libtcmalloc-minimal4 libjemalloc2`).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

from benchmarks import common
from irl_lm.cpu import host_allocator

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def allocators() -> dict[str, dict[str, str] | None]:
  """{name: environment overrides} of the allocators installed here (None: not installed)."""
  tcmalloc = host_allocator.find_tcmalloc()
  return {
      "system": {},
      "tcmalloc": ({"LD_PRELOAD": tcmalloc, **host_allocator.QUIET} if tcmalloc else None),
      "jemalloc": ({"LD_PRELOAD": JEMALLOC,
                    "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}
                   if os.path.isfile(JEMALLOC) else None),
  }


def child(case_name: str, objective_name: str, steps: int) -> None:
  from irl_lm.training import objectives  # pylint: disable=g-import-not-at-top
  objective = {"mle": objectives.MLE, "iqlearn": objectives.IQLearn}[objective_name]()
  built = common.t5_train_step(common.CASES[case_name], objective, optimizer="adamw")
  first = built["run"]()
  built["run"]()
  times, system, faults = [], [], []
  for _ in range(steps):
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    built["run"]()
    times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    system.append(after.ru_stime - before.ru_stime)
    faults.append(after.ru_minflt - before.ru_minflt)
  print(json.dumps({"times": times, "system": system, "faults": faults,
                    "loss": float(first["loss"]),
                    "preload": os.environ.get("LD_PRELOAD", "")}))


def run_child(overrides: dict[str, str], case_name: str, objective: str, steps: int) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
  env.update(overrides)
  env[host_allocator.ENV] = "system"  # what this process preloads, nothing more
  return common.run_json_child(
      "benchmarks.host_allocator", ["--child", case_name, "--objectives", objective, "--steps", str(steps)], env)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="small")
  parser.add_argument("--objectives", default="mle")
  parser.add_argument("--passes", type=int, default=2)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    child(args.child, args.objectives, args.steps)
    return 0
  found = {name: env for name, env in allocators().items() if env is not None}
  missing = [name for name, env in allocators().items() if env is None]
  print(f"{args.passes} passes x {args.steps} steps per allocator, each in its own process; "
        f"ratio = allocator / system (< 1: faster); not installed: {', '.join(missing) or '-'}")
  names = list(found)
  for case_name in args.cases.split(","):
    for objective in args.objectives.split(","):
      results: dict[str, list[dict]] = {name: [] for name in names}
      for p in range(args.passes):
        for name in names[p % len(names):] + names[:p % len(names)]:
          results[name].append(run_child(found[name], case_name, objective, args.steps))
      print(f"\n{case_name}, {objective}:")
      errors = {n: r["error"] for n, rs in results.items() for r in rs if "error" in r}
      if "system" in errors:
        print(f"  system failed: {errors['system'][:200]}")
        continue
      base = statistics.median(t for r in results["system"] for t in r["times"])
      loss = results["system"][0]["loss"]
      for name in names:
        if name in errors:
          print(f"  {name:9} failed: {errors[name][:200]}")
          continue
        rs = results[name]
        t = statistics.median(x for r in rs for x in r["times"])
        sys_s = statistics.median(x for r in rs for x in r["system"])
        faults = statistics.median(x for r in rs for x in r["faults"])
        same = all(abs(r["loss"] - loss) <= 1e-6 * abs(loss) for r in rs)
        print(f"  {name:9} {t * 1e3:8.0f} ms/step  {t / base:5.2f}x  kernel {sys_s:5.2f} s/step  "
              f"{faults:9.0f} page faults/step  {'same loss' if same else 'LOSS DIFFERS'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
