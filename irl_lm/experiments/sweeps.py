"""Sweeps: gin files + bindings × points × seeds, run one after another.

A sweep file (``gin/experiments/*.gin``) imports this module (which registers ``Sweep`` with
gin) and binds only ``Sweep.*``:

  import irl_lm.experiments.sweeps
  Sweep.name = 'quick_cpu'
  Sweep.gin_files = ['iqlearn_tiny.gin']
  Sweep.bindings = ["TrainSettings.num_train_steps = 100"]
  Sweep.seeds = [0, 1, 2]
  Sweep.points = [{'name': 'mle', 'method': 'mle', 'td_weight': 0.0,
                   'bindings': ['IQLearn.td_weight = 0.0']}]
  Sweep.grids = [{'method': 'iqlearn', 'parameter': 'IQLearn.td_weight', 'column': 'td_weight',
                  'values': [0.01, 0.1]}]
  Sweep.evaluate_bindings = ["evaluate.settings = ['greedy']"]

A point is a dict: ``name``, ``bindings`` (list of gin bindings), optional ``evaluate``
(False: train only), ``evaluate_bindings`` (replaces the sweep's), ``gin_files`` (replaces the
sweep's); every other key is a plain result column (``method``, ``td_weight``, ...). A grid
expands to one point per value, named ``<method>_<column><value>``.

Model size is a sweep parameter: with ``Sweep.sizes = ['base', 'large', 'xl']`` every point runs
at every size, named ``<size>/<point>`` with a ``size`` column, and ``{size}`` in any gin file
name or binding of the sweep or its points is replaced by the point's size (e.g.
``'gin/models/t5_1_1_{size}.gin'``). ``--sweep_bindings="Sweep.sizes = ['xl']"`` runs one size.

Each run trains with ``run.run_dir = '<out_dir>/<sweep>/<point>/seed<k>'`` and
``TrainSettings.seed = k``, then (unless the point says ``evaluate: False``) runs evaluate mode on
the same directory. A `PhaseRunner` runs each phase: `subprocess_phases` as ``python -m
irl_lm.main`` (what pods run), or `irl_lm.experiments.inprocess.InProcessRunner` in this
process; both write the same files. The sweep writes ``<out_dir>/<sweep>/manifest.json`` (every run, before any
starts) and per run ``status.json`` ({'status': 'ok' | 'failed', 'phase' (the failed one),
'returncode', 'seconds', 'train_wall_seconds' / 'evaluate_wall_seconds' (each command)})
and ``sweep.log`` (the failed command and its stderr tail).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

import gin

import irl_lm

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(irl_lm.__file__)))
POINT_KEYS = ("name", "bindings", "evaluate", "evaluate_bindings", "gin_files")
SIZE = "{size}"  # replaced by the point's `size` column (Sweep.sizes)
STATUS_FILE, LOG_FILE, MANIFEST_FILE = "status.json", "sweep.log", "manifest.json"
STDERR_TAIL_CHARS = 4000


@dataclasses.dataclass(frozen=True)
class Point:
  """One configuration of a sweep: bindings plus its swept values as plain columns."""
  name: str
  bindings: tuple[str, ...]
  columns: dict[str, Any]
  evaluate: bool = True
  evaluate_bindings: Optional[tuple[str, ...]] = None
  gin_files: Optional[tuple[str, ...]] = None


@dataclasses.dataclass(frozen=True)
class Sweep:
  """Gin files, base bindings, points and seeds (see the module docstring)."""
  name: str
  gin_files: tuple[str, ...]
  bindings: tuple[str, ...]
  points: tuple[Point, ...]
  seeds: tuple[int, ...] = (0,)
  evaluate_bindings: tuple[str, ...] = ()
  description: str = ""
  overrides: tuple[str, ...] = ()
  evaluate_overrides: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Run:
  """One (point, seed) of a sweep with its run directory and commands' gin arguments."""
  sweep: str
  point: str
  seed: int
  run_dir: str
  gin_files: tuple[str, ...]
  train_bindings: tuple[str, ...]
  evaluate_bindings: Optional[tuple[str, ...]]  # None: train only
  columns: dict[str, Any]

  def manifest_entry(self) -> dict[str, Any]:
    return {"sweep": self.sweep, "point": self.point, "seed": self.seed,
            "run_dir": self.run_dir, "columns": self.columns,
            "evaluate": self.evaluate_bindings is not None}


def _point(spec: dict[str, Any]) -> Point:
  if "name" not in spec:
    raise ValueError(f"a sweep point needs a 'name': {spec}")
  optional = lambda key: None if spec.get(key) is None else tuple(spec[key])  # noqa: E731
  return Point(name=str(spec["name"]), bindings=tuple(spec.get("bindings", ())),
               columns={k: v for k, v in spec.items() if k not in POINT_KEYS},
               evaluate=bool(spec.get("evaluate", True)),
               evaluate_bindings=optional("evaluate_bindings"), gin_files=optional("gin_files"))


def grid_points(grid: dict[str, Any]) -> list[dict[str, Any]]:
  """Point specs of a grid {'method', 'parameter' (gin name), 'column', 'values', optional
  'bindings', 'name' (prefix, default the method), other point keys and columns}."""
  fixed = {k: v for k, v in grid.items() if k not in ("parameter", "column", "values", "name")}
  prefix = grid.get("name", grid["method"])
  return [{**fixed, "name": f"{prefix}_{grid['column']}{value:g}",
           grid["column"]: value,
           "bindings": [*grid.get("bindings", ()), f"{grid['parameter']} = {value!r}"]}
          for value in grid["values"]]


def _mentions_size(value: Any) -> bool:
  if isinstance(value, str):
    return SIZE in value
  if isinstance(value, dict):
    value = list(value.values())
  if isinstance(value, (list, tuple)):
    return any(_mentions_size(v) for v in value)
  return False


def _fill_size(items: Optional[Sequence[str]], size: Optional[str]) -> Optional[tuple[str, ...]]:
  """`items` with ``{size}`` replaced by `size` (unchanged when `size` is None)."""
  if items is None:
    return None
  return tuple(item if size is None else item.replace(SIZE, size) for item in items)


def make_sweep(name: str, gin_files: Sequence[str], points: Sequence[dict[str, Any]] = (),
               grids: Sequence[dict[str, Any]] = (), bindings: Sequence[str] = (),
               seeds: Sequence[int] = (0,), evaluate_bindings: Sequence[str] = (),
               description: str = "", overrides: Sequence[str] = (),
               evaluate_overrides: Sequence[str] = (),
               select: Optional[Sequence[str]] = None, sizes: Sequence[str] = ()) -> Sweep:
  """Builds a `Sweep` (registered with gin as ``Sweep``); points first, then grids in order.

  Args:
    name: the sweep's folder under the output directory.
    gin_files: every run's gin files (a point's ``gin_files`` replace them).
    points, grids: point specs and grids (module docstring).
    bindings: every run's training bindings, before the point's.
    seeds: `TrainSettings.seed` values; each point runs once per seed.
    evaluate_bindings: evaluate-mode bindings (a point's ``evaluate_bindings`` replace them).
    description: a line for the results.
    overrides, evaluate_overrides: bindings after everything else in every training and
      evaluation command (a reduced variant of a sweep file that includes the full one).
    select: keep only these point names (in the sweep's order; with `sizes`, ``<size>/<point>``).
    sizes: model sizes; every point runs at each (module docstring).

  Raises:
    ValueError: two points share a name, a point has no name, `select` names an unknown
      point, or ``{size}`` appears without `sizes`.
  """
  specs = [*points, *(p for grid in grids for p in grid_points(grid))]
  if sizes:
    specs = [{**spec, "name": f"{size}/{spec.get('name')}", "size": size}
             for size in sizes for spec in specs]
  elif _mentions_size([gin_files, bindings, evaluate_bindings, overrides, evaluate_overrides,
                       *specs]):
    raise ValueError(f"sweep '{name}' uses {SIZE} but sets no sizes: add Sweep.sizes = "
                     "['base'] (or the sizes to run).")
  parsed = tuple(_point(dict(spec)) for spec in specs)
  names = [p.name for p in parsed]
  if len(set(names)) != len(names):
    raise ValueError(f"sweep '{name}' has duplicate point names: {names}")
  if select is not None:
    unknown = sorted(set(select) - set(names))
    if unknown:
      raise ValueError(f"sweep '{name}' selects unknown points {unknown}; it has {names}")
    parsed = tuple(p for p in parsed if p.name in set(select))
  return Sweep(name=name, gin_files=tuple(gin_files), bindings=tuple(bindings), points=parsed,
               seeds=tuple(int(s) for s in seeds),
               evaluate_bindings=tuple(evaluate_bindings), description=description,
               overrides=tuple(overrides), evaluate_overrides=tuple(evaluate_overrides))


gin.external_configurable(make_sweep, "Sweep")


def load_sweep(path: str, bindings: Sequence[str] = ()) -> Sweep:
  """Parses a sweep gin file (plus extra ``Sweep.*`` bindings) and returns its `Sweep`.

  Raises:
    irl_lm.config.ConfigError: a missing file or an invalid binding.
  """
  from irl_lm import config  # pylint: disable=g-import-not-at-top  (gin search path, errors)
  config.parse([path], bindings)
  sweep = gin.get_configurable("Sweep")()
  gin.clear_config()
  return sweep


def expand(sweep: Sweep, out_dir: str, extra_bindings: Sequence[str] = ()) -> list[Run]:
  """Every (point, seed) of `sweep` as a `Run`, point-major, under ``out_dir/<sweep>/``;
  `extra_bindings` go last into every run's training bindings (e.g. a local override). In a
  point's bindings ``{sweep_dir}`` becomes ``out_dir/<sweep>`` and ``{seed}`` the run's seed
  (e.g. GAIL from the MLE run of the same seed: ``train.init_from =
  '{sweep_dir}/mle/seed{seed}'``; an earlier point of the sweep runs first)."""
  runs = []
  sweep_dir = os.path.join(out_dir, sweep.name)
  for point in sweep.points:
    for seed in sweep.seeds:
      run_dir = os.path.join(sweep_dir, point.name, f"seed{seed}")
      size = point.columns.get("size")
      own = (b.replace("{sweep_dir}", sweep_dir).replace("{seed}", str(seed))
             for b in point.bindings)
      train = _fill_size((*sweep.bindings, *own, f"TrainSettings.seed = {seed}", *sweep.overrides,
                          *extra_bindings), size)
      evaluation = None
      if point.evaluate:
        evaluation = _fill_size((*(point.evaluate_bindings if point.evaluate_bindings is not None
                                   else sweep.evaluate_bindings), *sweep.evaluate_overrides), size)
      runs.append(Run(sweep=sweep.name, point=point.name, seed=seed, run_dir=run_dir,
                      gin_files=_fill_size(point.gin_files or sweep.gin_files, size),
                      train_bindings=train, evaluate_bindings=evaluation,
                      columns=dict(point.columns)))
  return runs


def phase_bindings(run: Run, mode: str) -> list[str]:
  """The gin bindings (without the run directory) of `run`'s 'train' or 'evaluate' phase."""
  bindings = list(run.train_bindings)
  if mode == "evaluate":
    bindings += ["run.mode = 'evaluate'", *(run.evaluate_bindings or ())]
  return bindings


def run_dir_binding(run: Run) -> str:
  return f"run.run_dir = '{run.run_dir}'"


def phases(run: Run) -> list[str]:
  """'train', then 'evaluate' unless the run is train-only."""
  return ["train"] + (["evaluate"] if run.evaluate_bindings is not None else [])


def main_args(run: Run, mode: str) -> list[str]:
  """`python -m irl_lm.main` flags (without the run directory) for 'train' or 'evaluate'."""
  return ([f"--gin_file={f}" for f in run.gin_files] +
          [f"--gin_bindings={b}" for b in phase_bindings(run, mode)])


def command(run: Run, mode: str) -> list[str]:
  """The argv of one phase of `run` ('train' or 'evaluate') on this machine."""
  return [sys.executable, "-m", "irl_lm.main", *main_args(run, mode),
          f"--gin_bindings={run_dir_binding(run)}"]


def shell_line(run: Run, pod: bool = False) -> str:
  """One shell line for `run`: train, then evaluate (``&&``); `pod`: as ``launch/run.sh
  GIN_FILE NAME [FLAGS...]`` takes it (run directory ``$BUCKET/<sweep>/<point>/seed<k>``)."""
  if pod:
    name = f"{run.sweep}/{run.point}/seed{run.seed}"
    lines = [_join(["launch/run.sh", run.gin_files[0], name,
                    *[f"--gin_file={f}" for f in run.gin_files[1:]],
                    *main_args(run, mode)[len(run.gin_files):]]) for mode in phases(run)]
  else:
    lines = [_join(["python", *command(run, mode)[1:]]) for mode in phases(run)]
  return " && ".join(lines)


def _join(argv: Sequence[str]) -> str:
  """Like `shlex.join`, but `--flag="a = 'b'"` where double quotes are safe (readable)."""
  out = []
  for arg in argv:
    flag, eq, value = arg.partition("=")
    if arg.startswith("--") and eq and shlex.quote(value) != value and not any(
        c in value for c in '"$`\\!'):
      out.append(f'{flag}="{value}"')
    else:
      out.append(shlex.quote(arg))
  return " ".join(out)


def train_summary_path(run_dir: str) -> str:
  return os.path.join(run_dir, "summary.json")


def eval_summary_path(run_dir: str) -> Optional[str]:
  """The evaluate-mode summary of the run's final step, else of a selected checkpoint
  (``eval/*_best_<metric>_step<k>``, `evaluate.select_by`), or None if there is none."""
  try:
    with open(train_summary_path(run_dir)) as f:
      step = json.load(f)["final_step"]
  except (OSError, ValueError, KeyError):
    return None
  matches = sorted(glob.glob(os.path.join(run_dir, "eval", f"*_step{step}", "summary.json")))
  matches = [m for m in matches if "_best_" not in os.path.basename(os.path.dirname(m))]
  selected = sorted(glob.glob(os.path.join(run_dir, "eval", "*_best_*_step*", "summary.json")))
  return (matches or selected or [None])[0]


def is_finished(run: Run) -> bool:
  """Trained (``summary.json``) and, unless train-only, evaluated at the final step."""
  if not os.path.isfile(train_summary_path(run.run_dir)):
    return False
  return run.evaluate_bindings is None or eval_summary_path(run.run_dir) is not None


# Keys of a run's summaries that differ between two executions of the same configuration.
UNREPRODUCIBLE_KEYS = ("seconds", "per_second", "run_dir", "output_dir")


def run_numbers(run_dir: str) -> dict[str, Any]:
  """Every number a finished run reports, as {dotted key: value}: its training summary
  (``history.<step>.<metric>``, ``eval.<score>``, ...) and evaluate mode's summary
  (``evaluate.settings.<setting>.<...>``), without wall times, rates and paths
  (`UNREPRODUCIBLE_KEYS`), so two runners' runs of one configuration compare equal."""
  out: dict[str, Any] = {}

  def walk(prefix: str, value: Any) -> None:
    if prefix.rsplit(".", 1)[-1].endswith(UNREPRODUCIBLE_KEYS):
      return
    if isinstance(value, dict):
      for key, item in value.items():
        walk(f"{prefix}.{key}", item)
    elif isinstance(value, list):
      for i, item in enumerate(value):
        walk(f"{prefix}.{item.get('step', i) if isinstance(item, dict) else i}", item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      out[prefix] = value

  for name, path in (("train", train_summary_path(run_dir)),
                     ("evaluate", eval_summary_path(run_dir))):
    try:
      with open(path or "") as f:
        walk(name, json.load(f))
    except (OSError, ValueError):
      pass
  return out


def read_status(run_dir: str) -> dict[str, Any]:
  """The run's ``status.json`` ({'status': 'missing'} when it never ran)."""
  try:
    with open(os.path.join(run_dir, STATUS_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {"status": "missing"}


def _write_json(path: str, value: Any) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(value, f, indent=2)


def write_manifest(sweep: Sweep, runs: Sequence[Run], out_dir: str) -> str:
  """Writes ``<out_dir>/<sweep>/manifest.json`` listing every run; returns its path. Readers
  find a run at ``<manifest's folder>/<point>/seed<k>`` (the folder may move)."""
  path = os.path.join(out_dir, sweep.name, MANIFEST_FILE)
  _write_json(path, {"sweep": sweep.name, "description": sweep.description,
                     "runs": [r.manifest_entry() for r in runs]})
  return path


Executor = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _subprocess_env() -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
  return env


def default_executor(argv: list[str]) -> "subprocess.CompletedProcess[str]":
  """Runs one command (irl_lm importable from this checkout), stdout to ours, stderr
  captured."""
  return subprocess.run(argv, env=_subprocess_env(), text=True,
                        stdout=None, stderr=subprocess.PIPE, check=False)


@dataclasses.dataclass(frozen=True)
class PhaseResult:
  """How one phase of a run ended: its exit status (0 ok; what `python -m irl_lm.main` would
  exit with) and, on failure, the text ``sweep.log`` records (command, stderr tail or
  traceback)."""
  returncode: int
  log: str = ""


# Runs one phase ('train' or 'evaluate') of a run: a subprocess or in this process.
PhaseRunner = Callable[[Run, str], PhaseResult]


def subprocess_phases(executor: Executor = default_executor) -> PhaseRunner:
  """A `PhaseRunner` that runs each phase as `command(run, phase)` through `executor`."""
  def run_phase(run: Run, phase: str) -> PhaseResult:
    argv = command(run, phase)
    result = executor(argv)
    return PhaseResult(result.returncode, f"$ {shlex.join(argv)}\n(exit {result.returncode})\n"
                       f"{(result.stderr or '')[-STDERR_TAIL_CHARS:]}\n")
  return run_phase


def execute_run(run: Run, executor: Executor = default_executor,
                phase_runner: Optional[PhaseRunner] = None) -> dict[str, Any]:
  """Trains then evaluates `run` (skipping a finished one) with `phase_runner` (default:
  subprocesses through `executor`); records and returns its status."""
  if is_finished(run):
    status = {**read_status(run.run_dir), "skipped": True}
    status.setdefault("status", "ok")
    return status
  phase_runner = phase_runner or subprocess_phases(executor)
  os.makedirs(run.run_dir, exist_ok=True)
  start, status = time.time(), {"status": "ok", "phase": None, "returncode": 0}
  for phase in phases(run):
    if phase == "train" and os.path.isfile(train_summary_path(run.run_dir)):
      continue  # trained before; only the evaluation is missing
    phase_start = time.time()
    result = phase_runner(run, phase)
    status[f"{phase}_wall_seconds"] = time.time() - phase_start
    if result.returncode != 0:
      status.update(status="failed", phase=phase, returncode=result.returncode)
      with open(os.path.join(run.run_dir, LOG_FILE), "a") as f:
        f.write(result.log)
      break
  status["seconds"] = time.time() - start
  _write_json(os.path.join(run.run_dir, STATUS_FILE), status)
  return status


def execute(sweep: Sweep, out_dir: str, executor: Executor = default_executor,
            log: Callable[[str], None] = print, extra_bindings: Sequence[str] = (),
            phase_runner: Optional[PhaseRunner] = None) -> list[dict[str, Any]]:
  """Runs every run of `sweep` in order (finished ones skipped); a failure is recorded in the
  run's ``status.json`` and ``sweep.log`` and the sweep goes on.

  Args:
    sweep, out_dir: what to run, and where (``<out_dir>/<sweep>/<point>/seed<k>``).
    executor: runs one command (the subprocess runner's, when `phase_runner` is None).
    log: gets one line per run.
    extra_bindings: last bindings of every run's training bindings.
    phase_runner: runs one phase of a run (e.g. `inprocess.InProcessRunner`); default
      subprocesses of `python -m irl_lm.main` through `executor`.

  Returns:
    One dict per run: the manifest entry plus its status.
  """
  runs, out = expand(sweep, out_dir, extra_bindings), []
  write_manifest(sweep, runs, out_dir)
  for i, run in enumerate(runs):
    status = execute_run(run, executor, phase_runner)
    if status.get("skipped"):
      state = "skipped (finished)"
    elif status["status"] == "failed":
      state = (f"failed in {status['seconds']:.0f} s ({status['phase']} exit "
               f"{status['returncode']}, see {os.path.join(run.run_dir, LOG_FILE)})")
    else:
      state = f"ok in {status['seconds']:.0f} s"
    log(f"[{sweep.name} {i + 1}/{len(runs)}] {run.point} seed {run.seed}: {state}")
    out.append({**run.manifest_entry(), **status})
  return out
