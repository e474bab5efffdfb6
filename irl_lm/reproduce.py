r"""Reproduces the paper's findings at CPU scale, in one command, with a verdict per finding
(docs/reproduction.md#the-cpu-protocol).

  python -m irl_lm.reproduce --quick [--out_dir=results/quick]  # ~15 min on 2 cores
  python -m irl_lm.reproduce --full [--out_dir=results/full]    # ~2 h on 2 cores
  python -m irl_lm.reproduce --quick --reduced                  # smoke run, a few minutes
  python -m irl_lm.reproduce --docstring                        # the docstring-task sweep

``--quick`` / ``--full`` run the protocol's sweeps (`PROTOCOLS`: the known-distribution and
arithmetic tasks, ``gin/experiments/protocol_*_{quick,full}.gin``); ``--reduced`` the smoke
sweep ``gin/experiments/quick_cpu_reduced.gin``; ``--docstring`` the docstring task from the
pretrained checkpoint (``gin/experiments/quick_cpu.gin``; build the checkpoint first with
``python -m irl_lm.main --gin_file=gin/pretrain_tiny.gin``). Sweeps are resumable (finished
runs are skipped). Then it measures sampling vs update time (``irl_lm.experiments.timing``, a
subprocess) and writes under the output folder: ``results.csv`` (one row per run × setting,
every run), ``aggregate.csv`` (mean ± SEM over seeds), ``curves.csv``, ``examples.csv``
(per example), ``inputs.csv`` (per run × temperature × input, `irl_lm.experiments.protocol`),
``findings.csv`` (every paired comparison with its interval and smallest detectable effect),
``timing.json``, ``figures/<item>.png`` + ``.csv`` and ``results.md``, which opens with the
verdict table generated from those numbers and one table per substrate
(`irl_lm.experiments.protocol_summary`). ``--from_scratch`` trains without a pretrained
checkpoint (``train.init_from = None``), which ``--reduced`` does by itself when it is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

from irl_lm import errors
from irl_lm.data import sources
from irl_lm.experiments import figures, inprocess, protocol, protocol_figures, protocol_summary
from irl_lm.experiments import report
from irl_lm.experiments import results, sweeps
from irl_lm.experiments import __main__ as experiments_cli

QUICK = "gin/experiments/quick_cpu.gin"  # the docstring task (--docstring)
REDUCED = "gin/experiments/quick_cpu_reduced.gin"
PROTOCOLS = {
    "quick": ("gin/experiments/protocol_known_distribution_quick.gin",
              "gin/experiments/protocol_arithmetic_quick.gin"),
    "full": ("gin/experiments/protocol_known_distribution_full.gin",
             "gin/experiments/protocol_arithmetic_full.gin"),
    "docstring": (QUICK,),
    "reduced": (REDUCED,),
}
FROM_SCRATCH = "train.init_from = None"


def missing_checkpoints(sweep: sweeps.Sweep) -> list[str]:
  """The local `train.init_from` paths the sweep's bindings name that do not exist (besides
  runs of the sweep itself, ``{sweep_dir}/...``, which it trains first)."""
  missing = []
  for binding in (*sweep.bindings, *(b for p in sweep.points for b in p.bindings
                                     if "{sweep_dir}" not in b)):
    match = re.fullmatch(r"\s*train\.init_from\s*=\s*'([^']+)'\s*", binding)
    if match:
      path = sources.expand_path(match.group(1))
      if "://" not in path and not os.path.exists(path) and path not in missing:
        missing.append(path)
  return missing


def measure_timing(out_path: str, *, repeats: int = 3, batch: int = 16) -> dict[str, Any]:
  """Runs `irl_lm.experiments.timing` in a subprocess (the quick sweep's batch shape) and
  returns its result; when it fails, {'error': its stderr tail} (also written to
  `out_path`)."""
  argv = [sys.executable, "-m", "irl_lm.experiments.timing", f"--out={out_path}",
          f"--repeats={repeats}", f"--batch={batch}"]
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      p for p in (sweeps.REPO_ROOT, os.environ.get("PYTHONPATH")) if p)}
  done = subprocess.run(argv, env=env, text=True, capture_output=True, check=False)
  if done.returncode != 0:
    print(f"timing failed (exit {done.returncode}): {done.stderr[-2000:]}", file=sys.stderr)
    result = {"error": f"exit {done.returncode}: {done.stderr[-2000:]}"}
    with open(out_path, "w") as f:
      json.dump(result, f, indent=2)
    return result
  with open(out_path) as f:
    return json.load(f)


def reproduce(out_dir: str = "results/quick", *, reduced: bool = False,
              from_scratch: bool = False, run: bool = True,
              runner: Optional[str] = None, protocol_name: str = "quick",
              num_resamples: int = 2000) -> dict[str, Any]:
  """Runs the protocol's sweeps and writes every CSV, figure and ``results.md``.

  Args:
    out_dir: the output folder (runs under ``<out_dir>/<sweep>/``).
    reduced: the smoke variant (one seed, three points, a few steps; `protocol_name`
      'reduced').
    from_scratch: train without the pretrained checkpoint (also when `reduced` and it is
      missing).
    run: False: only collect what is there and redraw (no training, no timing).
    runner: 'inprocess' or 'subprocess' (default `inprocess.default_runner`: in-process on a
      single-host CPU or GPU machine, compilation cache in ``<out_dir>/.jax_cache``).
    protocol_name: a key of `PROTOCOLS` ('quick', 'full', 'docstring', 'reduced').
    num_resamples: bootstrap replicates of every interval.

  Returns:
    {'results', 'aggregate', 'curves', 'examples', 'inputs', 'findings', 'report', 'timing'
    (paths), 'figures': {item: {'png', 'csv', 'rows'}}, 'verdicts' (one row per finding),
    'statuses', 'seconds', 'notes'}.

  Raises:
    FileNotFoundError: the pretrained checkpoint is missing (full quick run, no
      `from_scratch`); the message gives the command that builds it.
  """
  start = time.time()
  protocol_name = "reduced" if reduced else protocol_name
  if protocol_name not in PROTOCOLS:
    raise errors.UserError(f"unknown protocol '{protocol_name}': use one of "
                           f"{', '.join(PROTOCOLS)}.")
  loaded = [sweeps.load_sweep(path) for path in PROTOCOLS[protocol_name]]
  flag = {"reduced": "--quick --reduced"}.get(protocol_name, f"--{protocol_name}")
  notes = [*(f"sweep `{s.name}`: {s.description}" for s in loaded),
           f"command: `python -m irl_lm.reproduce {flag} --out_dir={out_dir}"
           f"{' --from_scratch' if from_scratch else ''}`"]
  missing = [path for sweep in loaded for path in missing_checkpoints(sweep)]
  if missing and not from_scratch:
    if not reduced:
      raise FileNotFoundError(
          f"the pretrained checkpoint {missing[0]} does not exist: build it with "
          "`python -m irl_lm.main --gin_file=gin/pretrain_tiny.gin`, or pass --from_scratch.")
    from_scratch = True
  if from_scratch:
    notes.append("trained from scratch (train.init_from = None), not from the pretrained "
                 "checkpoint: numbers are a smoke test, not the protocol")
  statuses = []
  timing_path = os.path.join(out_dir, "timing.json")
  if run:
    phase_runner = None
    if inprocess.choose_runner(runner) == "inprocess":
      phase_runner = inprocess.InProcessRunner(os.path.join(out_dir, ".jax_cache"))
    for sweep in loaded:
      statuses += sweeps.execute(sweep, out_dir, phase_runner=phase_runner,
                                 extra_bindings=[FROM_SCRATCH] if from_scratch else [])
    os.makedirs(out_dir, exist_ok=True)
    measure_timing(timing_path, repeats=1 if reduced else 3)
  timing = None
  if os.path.isfile(timing_path):
    with open(timing_path) as f:
      timing = json.load(f)
  paths = experiments_cli.write_results(out_dir)
  rows, curves = results.read_csv(paths["results"]), results.read_csv(paths["curves"])
  examples = results.read_csv(paths["examples"])
  inputs = protocol.collect_inputs(out_dir)
  paths["inputs"] = results.write_csv(inputs, os.path.join(out_dir, "inputs.csv"),
                                      protocol.INPUT_COLUMNS)
  finding_rows = protocol.findings(rows, examples, [*curves, *protocol.negate_nll(curves)],
                                   inputs, num_resamples=num_resamples)
  paths["findings"] = results.write_csv(finding_rows, os.path.join(out_dir, "findings.csv"),
                                        protocol.FINDING_COLUMNS)
  verdicts = protocol.verdicts(finding_rows)
  figure_dir = os.path.join(out_dir, "figures")
  items = {**figures.make_all(rows, curves, figure_dir, timing),
           **protocol_figures.make_all(inputs, curves, finding_rows, figure_dir)}
  seconds = time.time() - start
  notes.append(f"wall time of this invocation: {seconds / 60:.1f} min "
               f"({'runs skipped when finished' if run else 'collect only'})")
  preamble = (protocol.verdict_markdown(verdicts, finding_rows) + "\n## Every point\n\n" +
              protocol_summary.summary_markdown(rows, inputs))
  paths["report"] = report.write_report(out_dir, items, rows, notes=notes, timing=timing,
                                        title="irl_lm: CPU reproduction of the paper's results",
                                        preamble=preamble)
  return {**paths, "timing": timing_path, "figures": items, "statuses": statuses,
          "verdicts": verdicts, "seconds": seconds, "notes": notes}


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m irl_lm.reproduce",
                                   description=__doc__.split("\n\n")[0])
  which = parser.add_mutually_exclusive_group(required=True)
  which.add_argument("--quick", action="store_true",
                     help="the protocol's quick sweeps (~15 min on 2 cores; the "
                          "pod sweeps are gin/experiments/{xsum,gsm8k}.gin)")
  which.add_argument("--full", action="store_true",
                     help="the protocol's full sweeps (5 seeds; ~2 h on 2 cores)")
  which.add_argument("--docstring", action="store_true",
                     help="the docstring task from the pretrained checkpoint")
  parser.add_argument("--reduced", action="store_true", help="with --quick: the smoke run")
  parser.add_argument("--from_scratch", action="store_true")
  parser.add_argument("--out_dir", default=None)
  parser.add_argument("--collect_only", action="store_true",
                      help="redraw from existing runs; train nothing")
  parser.add_argument("--runner", choices=inprocess.RUNNERS, default=None,
                      help="run the sweep in this process or as subprocesses (default: "
                           "in-process unless on a TPU host or a multi-process launch)")
  args = parser.parse_args(argv)
  name = "full" if args.full else "docstring" if args.docstring else "quick"
  if args.reduced and name != "quick":
    parser.error("--reduced goes with --quick")
  out_dir = args.out_dir or ("results/reduced" if args.reduced else f"results/{name}")
  try:
    out = reproduce(out_dir, reduced=args.reduced, from_scratch=args.from_scratch,
                    run=not args.collect_only, runner=args.runner, protocol_name=name)
  except (FileNotFoundError, errors.UserError) as e:
    print(f"error: {e}", file=sys.stderr)
    return errors.EXIT_USER_ERROR
  print(f"\n{out['report']} ({out['seconds'] / 60:.1f} min); figures in "
        f"{os.path.join(out_dir, 'figures')}")
  return 1 if any(s["status"] == "failed" for s in out["statuses"]) else 0


if __name__ == "__main__":
  from irl_lm import main as main_lib  # as `irl_lm.main`: native INFO lines off stderr
  main_lib.quiet_native_logs()
  sys.exit(main())
