"""Optimisers and learning-rate schedules (thin, gin-friendly wrappers over optax)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from irl_lm import errors

SCHEDULES = ("constant", "rsqrt", "linear", "cosine")
OPTIMIZERS = ("adafactor", "adamw")


def _check_name(kind: str, binding: str, name: str, choices: Sequence[str]) -> None:
  if name not in choices:
    raise errors.SettingError(f"unknown {kind} '{name}' ({binding}){errors.closest(name, choices)}"
                              f": use one of {', '.join(choices)}.")


def _check(configurable: str, problems: dict[str, bool]) -> None:
  """Raises one SettingError naming every `configurable.<setting>` whose check is True."""
  found = [f"{configurable}.{problem}" for problem, failed in problems.items() if failed]
  if found:
    raise errors.SettingError(f"{'; '.join(found)}: fix the binding(s) before training.")


def make_schedule(name: str = "constant", *, learning_rate: float = 1e-3,
                  warmup_steps: int = 0, total_steps: Optional[int] = None,
                  end_fraction: float = 0.0) -> optax.Schedule:
  """Returns a learning-rate schedule `step -> lr`.

  Args:
    name: 'constant' (T5X fine-tuning default), 'rsqrt' (T5 pre-training: lr·min(1,
      1/sqrt(step/warmup))), 'linear' or 'cosine' (decay to `end_fraction`·lr at
      `total_steps`). All except 'rsqrt' ramp up linearly over `warmup_steps` first.
    learning_rate: peak learning rate.
    warmup_steps: linear warm-up length in steps.
    total_steps: the run's length; required by 'linear' and 'cosine'.
    end_fraction: final lr as a fraction of the peak for the decaying schedules.

  Raises:
    errors.SettingError: an unknown name, or a learning rate, warm-up or end fraction that
      makes no sense (negative, not finite, ...), naming the `make_schedule.*` binding.
  """
  _check_name("schedule", "make_schedule.name", name, SCHEDULES)
  _check("make_schedule", {
      f"learning_rate = {learning_rate!r} must be a number >= 0": not (
          _number(learning_rate) and learning_rate >= 0),
      f"warmup_steps = {warmup_steps!r} must be an integer >= 0": not (
          isinstance(warmup_steps, int) and warmup_steps >= 0),
      f"end_fraction = {end_fraction!r} must be in [0, 1]": not (
          _number(end_fraction) and 0 <= end_fraction <= 1)})
  if name == "rsqrt":
    warmup = float(max(warmup_steps, 1))
    return lambda step: learning_rate * jax.lax.rsqrt(jnp.maximum(step, warmup) / warmup)
  if name == "constant":
    decay = optax.constant_schedule(learning_rate)
  else:
    if total_steps is None:
      raise errors.SettingError(f"make_schedule.name = '{name}' needs total_steps: bind "
                                "make_schedule.total_steps (or TrainSettings.num_train_steps).")
    decay_steps = max(total_steps - warmup_steps, 1)
    if name == "linear":
      decay = optax.linear_schedule(learning_rate, learning_rate * end_fraction, decay_steps)
    else:
      decay = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=end_fraction)
  if warmup_steps <= 0:
    return decay
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def make_optimizer(name: str = "adafactor", *, schedule: optax.Schedule,
                   weight_decay: float = 0.0, grad_clip_norm: Optional[float] = None,
                   b1: float = 0.9, b2: float = 0.999,
                   adafactor_decay_rate: float = 0.8) -> optax.GradientTransformation:
  """Builds the optimiser.

  Args:
    name: 'adafactor' (T5X's default: factored second moments, update clipping 1.0,
      parameter-scaled steps, no momentum) or 'adamw'.
    schedule: learning-rate schedule from `make_schedule`.
    weight_decay: decoupled weight decay (adamw) / adafactor's weight_decay_rate.
    grad_clip_norm: clip gradients to this global norm first (None: no clipping).
    b1, b2: Adam moments.
    adafactor_decay_rate: Adafactor's second-moment decay exponent (T5X: 0.8).

  Returns:
    An optax GradientTransformation.

  Raises:
    errors.SettingError: an unknown name, or a weight decay, clipping norm or moment that makes
      no sense, naming the `make_optimizer.*` binding.
  """
  _check_name("optimizer", "make_optimizer.name", name, OPTIMIZERS)
  _check("make_optimizer", {
      f"weight_decay = {weight_decay!r} must be a number >= 0": not (
          _number(weight_decay) and weight_decay >= 0),
      f"grad_clip_norm = {grad_clip_norm!r} must be a number > 0 (or None)": (
          grad_clip_norm is not None and not _positive(grad_clip_norm)),
      f"b1 = {b1!r} must be in [0, 1)": not (_number(b1) and 0 <= b1 < 1),
      f"b2 = {b2!r} must be in [0, 1)": not (_number(b2) and 0 <= b2 < 1)})
  if name == "adafactor":
    tx = optax.adafactor(schedule, decay_rate=adafactor_decay_rate,
                         multiply_by_parameter_scale=True, clipping_threshold=1.0,
                         weight_decay_rate=weight_decay or None)
  else:
    tx = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
  if grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx


def _number(value: object) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: object) -> bool:
  return _number(value) and value > 0
