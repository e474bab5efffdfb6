r"""Runs sweeps one run after another (resumable), or prints their commands.

  python -m irl_lm.experiments --sweep=gin/experiments/quick_cpu.gin [--out_dir=results]
  python -m irl_lm.experiments --sweep=gin/experiments/xsum_base.gin --print_commands --pod

Flags:
  --sweep            sweep gin file(s), repeatable (see irl_lm.experiments.sweeps).
  --sweep_bindings   extra ``Sweep.*`` bindings, repeatable (e.g. "Sweep.seeds = [0]").
  --run_bindings     extra bindings appended to every run (e.g. "train.init_from = None").
  --out_dir          runs go to <out_dir>/<sweep>/<point>/seed<k> (default results).
  --print_commands   print one shell line per run (train && evaluate) and run nothing.
  --pod              with --print_commands: lines for launch/run.sh (run dir on the bucket).
  --results          after running, write <out_dir>/results.csv, aggregate.csv, curves.csv.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from irl_lm import errors
from irl_lm.experiments import results, sweeps


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m irl_lm.experiments",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--sweep", action="append", required=True)
  parser.add_argument("--sweep_bindings", action="append", default=[])
  parser.add_argument("--run_bindings", action="append", default=[])
  parser.add_argument("--out_dir", default="results")
  parser.add_argument("--print_commands", action="store_true")
  parser.add_argument("--pod", action="store_true")
  parser.add_argument("--results", action="store_true")
  return parser.parse_args(argv)


def write_results(out_dir: str) -> dict[str, str]:
  """Writes results.csv, aggregate.csv, curves.csv, scales.csv (`results.start_scales`) and
  examples.csv (`results.collect_examples`) under `out_dir`; returns their paths."""
  rows = results.collect(out_dir)
  curves = results.collect_curves(out_dir)
  return {"results": results.write_csv(rows, os.path.join(out_dir, "results.csv"),
                                       results.results_columns(rows)),
          "aggregate": results.write_csv(results.aggregate(rows),
                                         os.path.join(out_dir, "aggregate.csv")),
          "curves": results.write_csv(curves, os.path.join(out_dir, "curves.csv")),
          "scales": results.write_csv(results.start_scales(curves),
                                      os.path.join(out_dir, "scales.csv")),
          "examples": results.write_csv(results.collect_examples(out_dir),
                                        os.path.join(out_dir, "examples.csv"),
                                        results.EXAMPLE_COLUMNS)}


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs (or prints) the sweeps; returns the exit status (2 after a user error's one line)."""
  args = parse_args(argv)
  try:
    return _main(args)
  except errors.UserError as e:  # a sweep file, binding or flag: one sentence
    print(f"error: {e}", file=sys.stderr)
    return errors.EXIT_USER_ERROR


def _main(args: argparse.Namespace) -> int:
  loaded = [sweeps.load_sweep(path, args.sweep_bindings) for path in args.sweep]
  if args.print_commands:
    for sweep in loaded:
      for run in sweeps.expand(sweep, args.out_dir, args.run_bindings):
        print(sweeps.shell_line(run, pod=args.pod))
    return 0
  failed = 0
  for sweep in loaded:
    statuses = sweeps.execute(sweep, args.out_dir, extra_bindings=args.run_bindings)
    failed += sum(s["status"] == "failed" for s in statuses)
  if args.results:
    for name, path in write_results(args.out_dir).items():
      print(f"{name}: {path}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
