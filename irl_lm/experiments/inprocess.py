"""Runs a sweep's runs in this Python process: one start-up, and compiled programs reused.

Every phase does what ``python -m irl_lm.main`` does with the same flags: gin is cleared, the
run's gin files and bindings are parsed (`irl_lm.config.parse`) and gin's ``run`` is called, so
a run writes the same files (run directory, ``summary.json``, ``eval/``) and the sweep the same
``status.json`` / ``sweep.log``. An exception is what main's exit status would say: 2 for a
configuration or input error, 3 for a non-finite step, 1 for anything else (the traceback goes
to ``sweep.log``); the sweep records the run as failed and goes on. A preemption or Ctrl-C
during training (the train job saves a checkpoint first) ends the sweep with main's exit status
(143 / 130), like a signal to the subprocess runner; a rerun resumes.

Compilation: each run builds its jitted programs afresh (new closures, so jax's in-memory
caches miss), but with jax's persistent compilation cache (`enable_compilation_cache`) a
program whose HLO was compiled before (another seed of a point, the evaluation programs of
every point of the same shapes) is read from the cache instead of compiled by XLA.
"""
from __future__ import annotations

import glob
import os
import sys
import traceback
from typing import Any, Mapping, Optional, Sequence

from irl_lm.experiments import sweeps

RUNNERS = ("inprocess", "subprocess")
# Environment variables of a TPU VM or a multi-process launch: such sweeps run as subprocesses
# (one process per host owns the chips; `launch/run.sh` starts the runs of a pod).
MULTI_PROCESS_ENV = ("TPU_NAME", "TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE",
                     "CLOUD_TPU_TASK_ID", "JAX_COORDINATOR_ADDRESS")
TPU_DEVICE_GLOBS = ("/dev/accel*", "/dev/vfio/[0-9]*")


def default_runner(environ: Mapping[str, str] = os.environ,
                   device_globs: Sequence[str] = TPU_DEVICE_GLOBS) -> str:
  """'subprocess' on a TPU host or in a multi-process launch, else 'inprocess' (a single-host
  CPU or GPU machine). Decided without initialising jax, whose TPU backend would hold the
  chips that the subprocesses need."""
  if any(environ.get(name) for name in MULTI_PROCESS_ENV):
    return "subprocess"
  for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(environ.get(name, "1") or "1") > 1:
      return "subprocess"
  if any(glob.glob(pattern) for pattern in device_globs):
    return "subprocess"
  return "inprocess"


def choose_runner(requested: Optional[str]) -> str:
  """The runner of a sweep: `requested` ('inprocess' | 'subprocess'), else `default_runner`.

  Raises:
    ValueError: an unknown runner name.
  """
  if requested is not None and requested not in RUNNERS:
    raise ValueError(f"unknown runner '{requested}': use one of {', '.join(RUNNERS)}.")
  return requested or default_runner()


def enable_compilation_cache(cache_dir: str) -> None:
  """Turns on jax's persistent compilation cache in `cache_dir` for every program, however
  small or quick to compile (the defaults skip programs compiled in under a second)."""
  import jax  # pylint: disable=g-import-not-at-top
  os.makedirs(cache_dir, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class InProcessRunner:
  """A `sweeps.PhaseRunner` that runs each phase in this process (module docstring)."""

  def __init__(self, compilation_cache_dir: Optional[str] = None):
    """`compilation_cache_dir`: jax's persistent compilation cache (None: leave jax's
    configuration as it is)."""
    if compilation_cache_dir:
      enable_compilation_cache(compilation_cache_dir)

  def __call__(self, run: sweeps.Run, phase: str) -> sweeps.PhaseResult:
    import gin  # pylint: disable=g-import-not-at-top
    from irl_lm import config  # pylint: disable=g-import-not-at-top  (jax, the jobs)
    from irl_lm.training import stopping  # pylint: disable=g-import-not-at-top
    bindings = [*sweeps.phase_bindings(run, phase), sweeps.run_dir_binding(run)]
    header = (f"in process: {phase} --gin_file {' '.join(run.gin_files)}\n" +
              "".join(f"  {b}\n" for b in bindings))
    default_name = os.path.splitext(os.path.basename(run.gin_files[0]))[0]
    try:
      config.parse(run.gin_files, bindings)
      gin.get_configurable("run")(default_name=default_name)
    except stopping.NonFiniteError as e:
      return _failed(e.exit_code, header, f"error: {_sentence(e)}\n")
    except stopping.TrainingStopped as e:  # preempted / interrupted after a checkpoint
      print(f"{_sentence(e)} The sweep stops here; rerun it to resume.", file=sys.stderr)
      raise SystemExit(e.exit_code) from e
    except config.USER_ERRORS as e:
      return _failed(2, header, f"error: {_sentence(e)}\n")
    except Exception:  # pylint: disable=broad-except  (recorded; the sweep goes on)
      return _failed(1, header)
    finally:
      gin.clear_config()
    return sweeps.PhaseResult(0)


def _sentence(e: BaseException) -> str:
  return str(e).split("\n  In call to configurable")[0]


def _failed(returncode: int, header: str, message: Optional[str] = None) -> sweeps.PhaseResult:
  text = message or traceback.format_exc()[-sweeps.STDERR_TAIL_CHARS:]
  return sweeps.PhaseResult(returncode, f"{header}(exit {returncode})\n{text}\n")


def execute(sweep: sweeps.Sweep, out_dir: str, *, compilation_cache_dir: Optional[str] = None,
            extra_bindings: Sequence[str] = (), log: Any = print) -> list[dict[str, Any]]:
  """`sweeps.execute` with every phase run in this process (`InProcessRunner`)."""
  return sweeps.execute(sweep, out_dir, log=log, extra_bindings=extra_bindings,
                        phase_runner=InProcessRunner(compilation_cache_dir))
