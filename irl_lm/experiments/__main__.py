r"""Runs sweeps one run after another (resumable), or prints their commands.

  python -m irl_lm.experiments --sweep=gin/experiments/quick_cpu.gin [--out_dir=results]
  python -m irl_lm.experiments --sweep=gin/experiments/xsum.gin --print_commands --pod

Flags:
  --sweep            sweep gin file(s), repeatable (see irl_lm.experiments.sweeps).
  --sweep_bindings   extra ``Sweep.*`` bindings, repeatable (e.g. "Sweep.seeds = [0]").
  --run_bindings     extra bindings appended to every run (e.g. "train.init_from = None").
  --out_dir          runs go to <out_dir>/<sweep>/<point>/seed<k> (default results).
  --print_commands   print one shell line per run (train && evaluate) and run nothing.
  --pod              with --print_commands: lines for launch/run.sh (run dir on the bucket).
  --no-results       skip what is written by default after running: <out_dir>/results.csv,
                     aggregate.csv, curves.csv, examples.csv (and
                     known_distribution_positions.csv when the runs report it).
  --no-figures       skip the figures drawn by default (figures.make_all into
                     <out_dir>/figures; skipped with a note when matplotlib,
                     irl_lm[experiments], is not installed).
  --runner           'inprocess': every run in this process (one start-up; compiled programs
                     reused through jax's persistent compilation cache); 'subprocess': each
                     phase as `python -m irl_lm.main`. Default: in-process on a single-host
                     CPU or GPU machine, subprocesses on a TPU host or a multi-process launch.
  --compilation_cache  the in-process runner's jax compilation cache (default
                     <out_dir>/.jax_cache; '' leaves jax's configuration alone).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import Optional, Sequence

from irl_lm import errors
from irl_lm.experiments import inprocess, results, sweeps


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m irl_lm.experiments",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--sweep", action="append", required=True)
  parser.add_argument("--sweep_bindings", action="append", default=[])
  parser.add_argument("--run_bindings", action="append", default=[])
  parser.add_argument("--out_dir", default="results")
  parser.add_argument("--print_commands", action="store_true")
  parser.add_argument("--pod", action="store_true")
  parser.add_argument("--results", action=argparse.BooleanOptionalAction, default=True)
  parser.add_argument("--figures", action=argparse.BooleanOptionalAction, default=True)
  parser.add_argument("--runner", choices=inprocess.RUNNERS, default=None)
  parser.add_argument("--compilation_cache", default=None)
  return parser.parse_args(argv)


def write_results(out_dir: str) -> dict[str, str]:
  """Writes results.csv, aggregate.csv, curves.csv, scales.csv (`results.start_scales`) and
  examples.csv (`results.collect_examples`) under `out_dir`, and
  known_distribution_positions.csv when runs report the teacher's log-probability by position;
  returns their paths."""
  rows = results.collect(out_dir)
  curves = results.collect_curves(out_dir)
  paths = {"results": results.write_csv(rows, os.path.join(out_dir, "results.csv"),
                                        results.results_columns(rows)),
           "aggregate": results.write_csv(results.aggregate(rows),
                                          os.path.join(out_dir, "aggregate.csv")),
           "curves": results.write_csv(curves, os.path.join(out_dir, "curves.csv")),
           "scales": results.write_csv(results.start_scales(curves),
                                       os.path.join(out_dir, "scales.csv")),
           "examples": results.write_csv(results.collect_examples(out_dir),
                                         os.path.join(out_dir, "examples.csv"),
                                         results.EXAMPLE_COLUMNS)}
  positions = results.collect_positions(out_dir)
  if positions:
    paths["positions"] = results.write_csv(positions,
                                           os.path.join(out_dir, results.POSITIONS_FILE))
  return paths


def write_figures(out_dir: str, paths: dict[str, str]) -> dict[str, dict]:
  """`figures.make_all` from the CSVs `write_results` wrote, into ``<out_dir>/figures``."""
  from irl_lm.experiments import figures  # pylint: disable=g-import-not-at-top  (matplotlib)
  positions = results.read_csv(paths["positions"]) if "positions" in paths else []
  return figures.make_all(results.read_csv(paths["results"]), results.read_csv(paths["curves"]),
                          os.path.join(out_dir, "figures"), positions=positions)


def main(argv: Optional[Sequence[str]] = None, quiet_native_logs: bool = False) -> int:
  """Runs (or prints) the sweeps; returns the exit status (2 after a user error's one line).
  `quiet_native_logs`: filter native INFO lines out of stderr as `python -m irl_lm.main` does
  (the in-process runner; changes this process's fd 2)."""
  args = parse_args(argv)
  try:
    return _main(args, quiet_native_logs)
  except errors.UserError as e:  # a sweep file, binding or flag: one sentence
    print(f"error: {e}", file=sys.stderr)
    return errors.EXIT_USER_ERROR


def _main(args: argparse.Namespace, quiet_native_logs: bool) -> int:
  loaded = [sweeps.load_sweep(path, args.sweep_bindings) for path in args.sweep]
  if args.print_commands:
    for sweep in loaded:
      for run in sweeps.expand(sweep, args.out_dir, args.run_bindings):
        print(sweeps.shell_line(run, pod=args.pod))
    return 0
  runner = inprocess.choose_runner(args.runner)
  phase_runner = None
  if runner == "inprocess":
    if quiet_native_logs:
      from irl_lm import main as main_lib  # pylint: disable=g-import-not-at-top
      main_lib.quiet_native_logs()
    cache = args.compilation_cache
    phase_runner = inprocess.InProcessRunner(
        os.path.join(args.out_dir, ".jax_cache") if cache is None else cache)
  print(f"runner: {runner}")
  failed = 0
  for sweep in loaded:
    statuses = sweeps.execute(sweep, args.out_dir, extra_bindings=args.run_bindings,
                              phase_runner=phase_runner)
    failed += sum(s["status"] == "failed" for s in statuses)
  if args.results or args.figures:
    paths = write_results(args.out_dir)
    for name, path in paths.items():
      print(f"{name}: {path}")
    if args.figures and importlib.util.find_spec("matplotlib") is None:
      print("figures skipped: matplotlib is not installed (pip install 'irl_lm[experiments]').")
    elif args.figures:
      for name, item in write_figures(args.out_dir, paths).items():
        print(f"{name}: {item['png']}")
  return 1 if failed else 0


if __name__ == "__main__":
  from irl_lm.cpu import host_allocator  # tcmalloc for the in-process runs, as irl_lm.main has
  try:
    host_allocator.reexec_with_allocator("irl_lm.experiments", sys.argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  sys.exit(main(quiet_native_logs=True))
