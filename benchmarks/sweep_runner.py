r"""A small sweep run both ways: subprocesses per phase vs every run in one process.

  python -m benchmarks sweep_runner                       # 2 points x 2 seeds, 4 steps
  python -m benchmarks sweep_runner --seeds=3 --steps=8 --keep=/tmp/sweep_bench

Each runner is one command, `python -m irl_lm.experiments --sweep=FILE --runner=R`, into its own
temporary folder (the in-process runner with a fresh compilation cache there), so each time
includes its start-up. The sweep: `gin/iqlearn_tiny.gin` from scratch, MLE (λ = 0) and
IQLearn (λ = 0.1), `--steps` steps of batch 8, the end-of-training evaluation and evaluate
mode (greedy plus K = 2 samples for Self-BLEU) on `--eval_examples` validation examples.

Prints per runner the wall time, the CPU time of its processes (user + system; less affected
by other work on a shared machine), the load average and peak memory, the speed-up ratios, and
whether every run reported the same numbers both ways (`sweeps.run_numbers`: losses and
training metrics per logged step, evaluation scores, rewards, Self-BLEU; not times).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from irl_lm.experiments import sweeps

SWEEP = """
import irl_lm.experiments.sweeps
Sweep.name = 'bench'
Sweep.gin_files = ['gin/iqlearn_tiny.gin']
Sweep.seeds = {seeds}
Sweep.bindings = [
    "TrainSettings.num_train_steps = {steps}", "TrainSettings.batch_size = 8",
    "TrainSettings.log_every = {log_every}",
    "CheckpointSettings.every = {steps}", "CheckpointSettings.keep = 1",
    "TrainSettings.tensorboard = False", "make_schedule.warmup_steps = 0",
    "EvalSettings.examples = {eval_examples}", "EvalSettings.batch_size = 8"]
Sweep.evaluate_bindings = [
    "evaluate.settings = ['greedy']", "evaluate.num_examples = {eval_examples}",
    "evaluate.diversity_samples = 2"]
Sweep.grids = [{{'method': 'iqlearn', 'parameter': 'IQLearn.td_weight', 'column': 'td_weight',
                'values': {weights}}}]
"""
RUNNERS = ("subprocess", "inprocess")


def write_sweep(folder: str, *, points: int, seeds: int, steps: int, eval_examples: int) -> str:
  """The benchmark's sweep file: λ in (0, 0.1, 1, ...)[:points], seeds 0..seeds-1."""
  weights = [0.0, 0.1, 1.0, 0.01, 0.3][:points]
  path = os.path.join(folder, "bench.gin")
  with open(path, "w") as f:
    f.write(SWEEP.format(seeds=list(range(seeds)), steps=steps, log_every=max(steps // 2, 1),
                         eval_examples=eval_examples, weights=weights))
  return path


# Runs argv[2:] and writes the CPU seconds and peak resident set of it and its descendants
# (getrusage of the children of this wrapper alone) to the file argv[1].
MEASURE = """
import json, resource, subprocess, sys
code = subprocess.run(sys.argv[2:]).returncode
r = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"cpu_s": r.ru_utime + r.ru_stime, "max_rss_gb": r.ru_maxrss / 2**20},
          open(sys.argv[1], "w"))
sys.exit(code)
"""


def run_sweep(sweep_file: str, out_dir: str, runner: str) -> dict[str, float]:
  """Runs the sweep with `runner` as one command: its wall and CPU seconds, the load average
  after it and the largest resident set of its processes (in-process: the sweep's one
  process; with subprocesses: the largest phase's)."""
  usage = out_dir + ".usage.json"
  argv = [sys.executable, "-c", MEASURE, usage, sys.executable, "-m", "irl_lm.experiments",
          f"--sweep={sweep_file}", f"--out_dir={out_dir}", f"--runner={runner}"]
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      p for p in (sweeps.REPO_ROOT, os.environ.get("PYTHONPATH")) if p)}
  start = time.time()
  done = subprocess.run(argv, env=env, cwd=sweeps.REPO_ROOT, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
  wall = time.time() - start
  if done.returncode != 0:
    raise RuntimeError(f"{runner} sweep failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
  with open(usage) as f:
    return {"wall_s": wall, **json.load(f), "load_1min_after": os.getloadavg()[0]}


def compare(out_dirs: dict[str, str], sweep_file: str) -> list[dict[str, object]]:
  """Per run: how many numbers it reported and which differ between the runners."""
  sweep = sweeps.load_sweep(sweep_file)
  rows = []
  for run in sweeps.expand(sweep, out_dirs[RUNNERS[0]]):
    relative = os.path.relpath(run.run_dir, out_dirs[RUNNERS[0]])
    numbers = {r: sweeps.run_numbers(os.path.join(d, relative)) for r, d in out_dirs.items()}
    first, second = (numbers[r] for r in RUNNERS)
    differing = sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
    rows.append({"run": relative, "numbers": len(first), "differing": differing,
                 "loss_last": first.get("train.loss_last")})
  return rows


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--points", type=int, default=2)
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--eval_examples", type=int, default=8)
  parser.add_argument("--keep", default=None, help="folder to keep the runs in (else a temp)")
  parser.add_argument("--json", default=None, help="also write the result here")
  args = parser.parse_args(argv)
  folder = args.keep or tempfile.mkdtemp(prefix="sweep_runner_")
  os.makedirs(folder, exist_ok=True)
  sweep_file = write_sweep(folder, points=args.points, seeds=args.seeds, steps=args.steps,
                           eval_examples=args.eval_examples)
  out_dirs = {r: os.path.join(folder, r) for r in RUNNERS}
  print(f"{args.points} points x {args.seeds} seeds, {args.steps} steps, "
        f"{args.eval_examples} eval examples; runs in {folder}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
  timings = {}
  for runner in RUNNERS:
    timings[runner] = run_sweep(sweep_file, out_dirs[runner], runner)
    t = timings[runner]
    print(f"{runner:>10}: wall {t['wall_s']:7.1f} s, CPU {t['cpu_s']:7.1f} s "
          f"(load after {t['load_1min_after']:.1f}, max RSS {t['max_rss_gb']:.2f} GB)")
  sub, inp = timings["subprocess"], timings["inprocess"]
  wall_ratio, cpu_ratio = sub["wall_s"] / inp["wall_s"], sub["cpu_s"] / inp["cpu_s"]
  print(f"speed-up (subprocess / in-process): wall {wall_ratio:.2f}x, CPU {cpu_ratio:.2f}x")
  rows = compare(out_dirs, sweep_file)
  for row in rows:
    state = "identical" if not row["differing"] else f"DIFFER: {row['differing'][:5]}"
    print(f"  {row['run']}: {row['numbers']} numbers, last loss {row['loss_last']:.6f}, "
          f"{state}")
  identical = all(not row["differing"] and row["numbers"] for row in rows)
  print(f"same losses and scores per run both ways: {'yes' if identical else 'NO'}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"timings": timings, "wall_ratio": wall_ratio, "cpu_ratio": cpu_ratio,
                 "runs": rows, "identical": identical, "args": vars(args)}, f, indent=2)
  return 0 if identical else 1


if __name__ == "__main__":
  sys.exit(main())
