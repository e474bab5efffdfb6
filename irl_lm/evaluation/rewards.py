"""Reward analysis: the implicit reward a model assigns to its outputs, and how it tracks quality.

For any checkpoint (IQLearn, MLE or any other method), the logits are read as a soft
Q-function (docs/design.md#the-decision-process) and each output token gets the implicit reward
``r_t = z(s_t, a_t) - gamma * V(s_{t+1})`` (:func:`irl_lm.losses.soft_q.implicit_rewards`, with
``V = 0`` after the output's last token). The summed reward of an output is the sum over its
tokens, EOS included. The paper reports the Spearman correlation between the summed reward of
sampled outputs and their task score (TL;DR ROUGE-1: IQLearn 0.64 vs MLE -0.05).

The same teacher-forced pass also gives the policy's per-token entropy and log-likelihood of
the outputs, used for the mean-entropy diversity metric.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irl_lm.losses import soft_q
from irl_lm.models import base
from irl_lm.models.base import EOS_ID


def output_weights(tokens_BT: jax.Array, eos_id: int = EOS_ID) -> jax.Array:
  """1.0 on emitted output tokens (up to and including the first EOS, before any PAD), 0.0 after.

  A row without EOS (cut at T) counts all T positions as emitted (`base.continuation_mask`).

  Args:
    tokens_BT: int [B, T] decoded tokens (0 after EOS).
    eos_id: end-of-sequence id.

  Returns:
    float32 [B, T].
  """
  return base.continuation_mask(tokens_BT, eos_id=eos_id).astype(jnp.float32)


def output_statistics(model: Any, params: Any, prompts: jax.Array, tokens: jax.Array, *,
                      gamma: float) -> dict[str, jax.Array]:
  """Teacher-forces the model on its outputs and sums per-token quantities per row.

  Args:
    model: a `base.Model` (`teacher_forcing_batch`, `logits`).
    params: its parameters.
    prompts: int32 [B, L], the model's prompts.
    tokens: int32 [B, T] outputs (EOS included, 0 after it).
    gamma: discount of the implicit reward.

  Returns:
    float32 [B] arrays: ``reward`` (summed implicit reward), ``log_prob`` (summed log pi),
    ``entropy`` (summed per-token entropy, nats) and ``num_tokens`` (emitted tokens).
  """
  batch = model.teacher_forcing_batch(prompts, tokens)
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  stats = soft_q.token_statistics(model.logits(params, batch), targets)
  rewards = soft_q.rewards_from_values(stats.target_logits, stats.values, weights, gamma=gamma)
  return {"reward": jnp.sum(rewards, axis=1),
          "log_prob": jnp.sum(stats.log_probs * weights, axis=1),
          "entropy": jnp.sum(stats.entropy * weights, axis=1),
          "num_tokens": jnp.sum(weights, axis=1)}


def make_statistics_fn(model: Any, *, gamma: float, partitioner: Any = None,
                       param_shardings: Any = None
                       ) -> Callable[[Any, Any, Any], dict[str, np.ndarray]]:
  """A jitted :func:`output_statistics`: ``(params, prompts [B, L], tokens [B, T]) -> dict``.

  With a partitioner (and the parameters' shardings) the batch is sharded over 'data' as in
  training; the results come back as numpy float32 [B] arrays.
  """
  def fn(params, prompts, tokens):
    return output_statistics(model, params, prompts, tokens, gamma=gamma)

  if partitioner is None:
    jitted = jax.jit(fn)
  else:
    batch = partitioner.batch_sharding()
    jitted = partitioner.jit(fn, in_shardings=(param_shardings, batch, batch),
                             out_shardings=batch)
  return lambda params, prompts, tokens: jax.device_get(jitted(params, prompts, tokens))


def spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, Optional[float]]:
  """Spearman rank correlation (scipy) between two equally long sequences.

  Args:
    x, y: N numbers each.

  Returns:
    ``{'rho', 'p_value', 'n'}``; rho and p_value are None when undefined (N < 3 or either
    sequence constant).
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top  (only the analysis needs it)
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape:
    raise ValueError(f"spearman: shapes {x.shape} and {y.shape} differ.")
  n = int(x.size)
  if n < 3 or np.all(x == x.flat[0]) or np.all(y == y.flat[0]):
    return {"rho": None, "p_value": None, "n": n}
  result = stats.spearmanr(x, y)
  rho, p = float(result.statistic), float(result.pvalue)
  return {"rho": None if math.isnan(rho) else rho, "p_value": None if math.isnan(p) else p,
          "n": n}
