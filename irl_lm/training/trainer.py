"""The training loop: host batches → sharded step → metrics log, checkpoints, evaluation hooks.

What the user sees (process 0, stdout): a progress line per logged step (step, loss, steps/s,
ETA, skipped updates when there are any); evaluations print their own line. Everything else goes
to absl logging (INFO is hidden unless `--verbosity=0`; warnings show).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import numpy as np
from absl import logging
from etils import epath

from irl_lm.checkpoints import manager as checkpoints_lib
from irl_lm.training import state as state_lib
from irl_lm.training import step as step_lib
from irl_lm.training import stopping
from irl_lm.training.settings import TrainSettings

Batch = Mapping[str, np.ndarray]


def console(line: str) -> None:
  """Prints one line for the user (process 0 only, flushed at once)."""
  if jax.process_index() == 0:
    print(line, flush=True)


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


_NOTED_NO_TENSORBOARD = []


def _note_no_tensorboard() -> None:
  if not _NOTED_NO_TENSORBOARD:
    _NOTED_NO_TENSORBOARD.append(True)
    logging.warning('TensorBoard event files need clu and TensorFlow, which are not installed '
                 '(pip install "irl_lm[seqio]"); metrics go to metrics.jsonl only.')


class MetricsLog:
  """Writes averaged metrics as JSON lines (`<run_dir>/metrics.jsonl`, always) and to
  TensorBoard (`<run_dir>/tensorboard`, when clu and TensorFlow are installed: the seqio extra;
  without them the log says so once and only the JSON lines are written).

  Resuming: pass `resume_step` (the step the run restarts from; 0 for a fresh start) and the
  file is rewritten (atomically, by process 0) keeping only the records with `step <=
  resume_step`, so the records of steps a resumed run replays replace those of the run that
  was interrupted: every step appears at most once and a reader needs no de-duplication. (A
  torn last line from a killed process is dropped too.) TensorBoard event files are append-only
  and may show the replayed steps twice.
  """

  def __init__(self, run_dir: str, *, tensorboard: bool = True,
               resume_step: Optional[int] = None):
    self.path = epath.Path(run_dir) / "metrics.jsonl"
    self._writer = None
    if jax.process_index() == 0 and resume_step is not None:
      self._keep_until(resume_step)
    if tensorboard and jax.process_index() == 0:
      try:
        from clu import metric_writers  # pylint: disable=g-import-not-at-top  (TensorFlow)
      except ImportError:
        _note_no_tensorboard()
      else:
        self._writer = metric_writers.create_default_writer(
            os.path.join(run_dir, "tensorboard"), asynchronous=False)

  def _keep_until(self, step: int) -> None:
    if not self.path.exists():
      return
    kept = []
    for line in self.path.read_text().splitlines():
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(record, dict) and record.get("step", step + 1) <= step:
        kept.append(line + "\n")
    tmp = self.path.parent / (self.path.name + ".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(self.path)

  def write(self, step: int, prefix: str, values: Mapping[str, float]) -> None:
    """Appends one record {'step', '<prefix>/<name>': value, ...}."""
    if jax.process_index() != 0:
      return
    record = {"step": step, **{f"{prefix}/{k}": float(v) for k, v in values.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self._writer is not None:
      self._writer.write_scalars(step, {k: v for k, v in record.items() if k != "step"})

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
      self._writer = None


def global_batch(local: Batch, sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
  """One global `jax.Array` per feature from this host's rows, sharded with `sharding`."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}


def global_batches(local: Iterator[Batch], sharding: jax.sharding.NamedSharding
                   ) -> Iterator[dict[str, jax.Array]]:
  """`global_batch` of each host batch, made when the loop asks for it."""
  return (global_batch(batch, sharding) for batch in local)


@dataclasses.dataclass(frozen=True)
class Throughput:
  """What a step's speed is compared with.

  Attributes:
    flops_per_step: the model FLOPs of one step (`models.flops.train_flops`; None: unknown).
    peak_flops: the peak FLOP/s of all devices together (None: unknown, e.g. CPUs).
  """
  flops_per_step: Optional[float] = None
  peak_flops: Optional[float] = None

  def rates(self, steps_per_second: float) -> dict[str, float]:
    """{'model_tflops_per_second', 'mfu' (model-FLOP utilisation)}, those that are known."""
    if not self.flops_per_step:
      return {}
    flops_per_second = self.flops_per_step * steps_per_second
    out = {"model_tflops_per_second": flops_per_second / 1e12}
    if self.peak_flops:
      out["mfu"] = flops_per_second / self.peak_flops
    return out


TermNorms = Callable[[state_lib.TrainState, Mapping[str, jax.Array]], Mapping[str, jax.Array]]


@dataclasses.dataclass(frozen=True)
class RecordExtras:
  """What each train record holds besides the means of the steps' metrics.

  Attributes:
    throughput: what the speed is compared with (`Throughput`).
    term_norms: None, or `norms(state, batch) -> {name: scalar}`
      (`term_norms.make_term_grad_norms`), run on the state and batch of each step that ends at
      a multiple of `log_every` (and of the last step), before that step: its values, of that
      one step, join the step's record as `train/<name>` (e.g. `train/grad_norm/nll`).
  """
  throughput: Throughput = Throughput()
  term_norms: Optional[TermNorms] = None


_BLAME = {"finite_loss": "the loss", "finite_grad_norm": "the gradient norm",
          "finite_state": "the updated parameters/optimiser state"}


class _Window:
  """The steps since the last metrics record: their metrics and finiteness checks.

  `check(upto)` fetches the HEALTH_KEYS flags of every unchecked step <= `upto` (blocking until
  those steps have run): a non-finite step raises `NonFiniteError` ('stop') or is counted as a
  skipped update ('skip').
  """

  def __init__(self, on_nonfinite: str, last_good: Callable[[], Optional[int]], directory: str):
    self._on_nonfinite = on_nonfinite
    self._last_good = last_good
    self._directory = directory
    self._steps: list[tuple[int, Mapping[str, jax.Array]]] = []
    self._checked = 0
    self._skipped: set[int] = set()
    self.total_skipped = 0

  def add(self, step: int, metrics: Mapping[str, jax.Array]) -> None:
    self._steps.append((step, metrics))

  def __len__(self) -> int:
    return len(self._steps)

  def check(self, upto: int) -> None:
    while self._checked < len(self._steps) and self._steps[self._checked][0] <= upto:
      step, metrics = self._steps[self._checked]
      health = jax.device_get({k: metrics[k] for k in step_lib.HEALTH_KEYS})
      bad = [k for k in step_lib.HEALTH_KEYS if not bool(health[k])]
      if bad:
        self._nonfinite(step, bad[0], metrics)
      self._checked += 1

  def _nonfinite(self, step: int, key: str, metrics: Mapping[str, jax.Array]) -> None:
    values = jax.device_get({"loss": metrics["loss"], "grad_norm": metrics["grad_norm"]})
    detail = f"loss {float(values['loss'])}, gradient norm {float(values['grad_norm'])}"
    if self._on_nonfinite == "skip":
      self._skipped.add(step)
      self.total_skipped += 1
      if self.total_skipped == 1:
        logging.warning("step %d: %s is not finite (%s); its update was skipped "
                        "(TrainSettings.on_nonfinite = 'skip'), and so will later ones be.",
                        step, _BLAME[key], detail)
      return
    last_good = self._last_good()
    saved = (f"nothing from step {step} on was saved, so checkpoint {last_good} in "
             f"{self._directory} is the last good one" if last_good is not None else
             "no checkpoint of this run was saved before it")
    raise stopping.NonFiniteError(
        f"training stopped at step {step}: {_BLAME[key]} is not finite ({detail}); {saved}. "
        "Lower the learning rate (or set TrainSettings.on_nonfinite = 'skip') and resume with "
        "--gin_bindings=\"run.allow_config_change = True\", or start a new run directory.",
        step=step)

  def flush(self) -> tuple[dict[str, float], int]:
    """The checked steps' means (skipped steps left out) and the number skipped; empties."""
    steps = self._steps[:self._checked]
    self._steps, self._checked = self._steps[self._checked:], 0
    kept = [m for s, m in steps if s not in self._skipped]
    skipped = len(steps) - len(kept)
    self._skipped -= {s for s, _ in steps}
    host = jax.device_get([{k: v for k, v in m.items() if k not in step_lib.HEALTH_KEYS}
                           for m in (kept or [m for _, m in steps])])
    means = {k: float(np.mean([h[k] for h in host])) if kept else float("nan")
             for k in host[0]}
    return means, skipped


def fit(state: state_lib.TrainState, train_step: Callable[..., Any],
        batches: Iterator[Mapping[str, jax.Array]], *, settings: TrainSettings,
        checkpointer: checkpoints_lib.Checkpointer, log: MetricsLog,
        evaluate: Optional[Callable[[int, state_lib.TrainState], None]] = None,
        eval_every: int = 0, handle_signals: bool = True,
        extras: RecordExtras = RecordExtras()
        ) -> tuple[state_lib.TrainState, list[dict[str, Any]], float]:
  """Runs `train_step` on `batches` (global, sharded over 'data': see `global_batches`) from
  `state.step` up to `settings.num_train_steps`.

  Every `settings.log_every` steps the metrics since the last record are averaged, written to `log` and
  printed as a progress line; checkpoints follow `checkpointer.should_save`; `evaluate(step,
  state)` runs every `eval_every` steps (0: never here), and at step 0 of a run that starts
  there (the first point of every validation curve). The final state is always saved.

  Stops early (see `stopping`):
  - on SIGTERM / SIGINT (`handle_signals`): after the current step, which is logged and saved
    (also off the checkpoint grid), raising `stopping.Preempted`; the caller closes (waits for)
    the checkpointer;
  - with `settings.on_nonfinite = 'stop'`, at the first step whose loss, gradient norm or
    updated state is not finite, raising `stopping.NonFiniteError` before anything from that step on is saved
    (so the last finite checkpoint is never rotated out). With 'skip' such steps were not
    applied by `train_step` (built with the same mode); they are left out of the averaged
    metrics and counted as `skipped_updates` in each record.

  Every checkpoint is saved only after every step up to it was checked finite.

  Each record also has what `extras` adds: the throughput rates (`Throughput.rates`; the
  model-FLOP utilisation shows on the progress line) and the per-term gradient norms of the
  logged step (`RecordExtras.term_norms`).

  Returns:
    (final state, logged records [{'step', metric: value, ...}], seconds spent in the loop).
  """
  num_train_steps, log_every = settings.num_train_steps, settings.log_every
  on_nonfinite = settings.on_nonfinite
  history: list[dict[str, Any]] = []
  start_step = int(state.step)
  saved = [start_step] if start_step in checkpointer.all_steps() else []
  window = _Window(on_nonfinite, lambda: saved[-1] if saved else None, checkpointer.directory)
  if evaluate is not None and eval_every > 0 and start_step == 0 < num_train_steps:
    evaluate(0, state)
  train_start = time.time()
  window_start, window_step = train_start, start_step

  norms: dict[int, Mapping[str, jax.Array]] = {}  # the step's term norms, until recorded

  def record(done: int) -> None:
    nonlocal window_start, window_step
    means, skipped = window.flush()
    if done in norms:
      means.update({k: float(v) for k, v in jax.device_get(norms.pop(done)).items()})
    now = time.time()
    steps_per_second = (done - window_step) / max(now - window_start, 1e-9)
    window_start, window_step = now, done
    means["steps_per_second"] = steps_per_second
    means.update(extras.throughput.rates(steps_per_second))
    if on_nonfinite == "skip":
      means["skipped_updates"] = float(skipped)
    log.write(done, "train", means)
    history.append({"step": done, **means})
    eta = _format_duration((num_train_steps - done) / max(steps_per_second, 1e-9))
    console(f"step {done}/{num_train_steps} | loss {means['loss']:.4f} | "
            f"{steps_per_second:.2f} steps/s"
            + (f" | MFU {means['mfu']:.1%}" if "mfu" in means else "") + f" | ETA {eta}"
            + (f" | skipped {window.total_skipped} updates" if window.total_skipped else ""))

  def save(done: int) -> None:
    if saved and saved[-1] == done:
      return
    window.check(done)
    checkpointer.save(done, state)
    saved.append(done)

  with stopping.StopRequest(enabled=handle_signals,
                            directory=getattr(checkpointer, "directory", None)) as stop:
    for step in range(start_step, num_train_steps):
      batch, done = next(batches), step + 1
      if extras.term_norms is not None and (done % log_every == 0 or done == num_train_steps):
        norms[done] = extras.term_norms(state, batch)  # before the step donates the state
      state, metrics = train_step(state, batch)
      window.add(done, metrics)
      # Keep at most one step in flight: the host still prepares the next batch while the
      # device works, but a long queue of dispatched steps can starve XLA's CPU collectives
      # (simulated multi-device runs abort after 40 s) and hides errors until log time.
      window.check(done - 1)
      stopping_now = stop.requested(done) and done < num_train_steps
      if done % log_every == 0 or done == num_train_steps or stopping_now:
        window.check(done)
        record(done)
      if checkpointer.should_save(done) or stopping_now:
        save(done)
      if stopping_now:
        raise stop.preempted(done, checkpointer.directory)
      if evaluate is not None and eval_every > 0 and done % eval_every == 0 and (
          done < num_train_steps):
        window.check(done)
        evaluate(done, state)
  train_seconds = time.time() - train_start
  save(int(state.step))
  return state, history, train_seconds
