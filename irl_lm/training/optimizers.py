"""Optimisers and learning-rate schedules (thin, gin-friendly wrappers over optax)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax


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
  """
  if name == "rsqrt":
    warmup = float(max(warmup_steps, 1))
    return lambda step: learning_rate * jax.lax.rsqrt(jnp.maximum(step, warmup) / warmup)
  if name == "constant":
    decay = optax.constant_schedule(learning_rate)
  elif name in ("linear", "cosine"):
    if total_steps is None:
      raise ValueError(f"schedule '{name}' needs total_steps: bind make_schedule.total_steps.")
    decay_steps = max(total_steps - warmup_steps, 1)
    if name == "linear":
      decay = optax.linear_schedule(learning_rate, learning_rate * end_fraction, decay_steps)
    else:
      decay = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=end_fraction)
  else:
    raise ValueError(
        f"unknown schedule '{name}': use one of 'constant', 'rsqrt', 'linear', 'cosine'.")
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
  """
  if name == "adafactor":
    tx = optax.adafactor(schedule, decay_rate=adafactor_decay_rate,
                         multiply_by_parameter_scale=True, clipping_threshold=1.0,
                         weight_decay_rate=weight_decay or None)
  elif name == "adamw":
    tx = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
  else:
    raise ValueError(f"unknown optimizer '{name}': use 'adafactor' or 'adamw'.")
  if grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx
