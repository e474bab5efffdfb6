"""Reward analysis: the implicit reward a model assigns to its outputs, and how it tracks quality.

For any checkpoint (IQLearn, MLE or any other method), the logits are read as a soft
Q-function (DESIGN.md section 1.1) and each output token gets the implicit reward
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

EOS_ID = 1


def output_weights(tokens_BT: jax.Array, eos_id: int = EOS_ID) -> jax.Array:
  """1.0 on emitted output tokens (up to and including the first EOS), 0.0 after it.

  A row without EOS (cut at T) counts all T positions as emitted.

  Args:
    tokens_BT: int [B, T] decoded tokens (0 after EOS).
    eos_id: end-of-sequence id.

  Returns:
    float32 [B, T].
  """
  is_eos = tokens_BT == eos_id
  after_eos = (jnp.cumsum(is_eos, axis=1) - is_eos) > 0
  return jnp.where(after_eos, 0.0, 1.0).astype(jnp.float32)


def output_statistics(model: Any, params: Any, encoder_input_tokens: jax.Array,
                      tokens: jax.Array, *, gamma: float, eos_id: int = EOS_ID
                      ) -> dict[str, jax.Array]:
  """Teacher-forces the model on its outputs and sums per-token quantities per row.

  Args:
    model: has ``logits(params, batch) -> float32 [B, T, V]``.
    params: its parameters.
    encoder_input_tokens: int32 [B, L].
    tokens: int32 [B, T] outputs (EOS included, 0 after it).
    gamma: discount of the implicit reward.
    eos_id: end-of-sequence id.

  Returns:
    float32 [B] arrays: ``reward`` (summed implicit reward), ``log_prob`` (summed log pi),
    ``entropy`` (summed per-token entropy, nats) and ``num_tokens`` (emitted tokens).
  """
  weights = output_weights(tokens, eos_id)
  targets = jnp.where(weights > 0, tokens, 0).astype(jnp.int32)
  batch = {"encoder_input_tokens": encoder_input_tokens,
           "decoder_input_tokens": jnp.pad(targets[:, :-1], ((0, 0), (1, 0))),
           # Marks real decoder positions; an emitted PAD (0) counts as real via the weights.
           "decoder_target_tokens": jnp.where(weights > 0, jnp.maximum(targets, 1), 0)}
  logits = model.logits(params, batch)
  stats = soft_q.token_statistics(logits, targets)
  rewards = soft_q.rewards_from_values(stats.target_logits, stats.values, weights, gamma=gamma)
  return {"reward": jnp.sum(rewards, axis=1),
          "log_prob": jnp.sum(stats.log_probs * weights, axis=1),
          "entropy": jnp.sum(stats.entropy * weights, axis=1),
          "num_tokens": jnp.sum(weights, axis=1)}


def make_statistics_fn(model: Any, *, gamma: float, partitioner: Any = None,
                       param_shardings: Any = None, eos_id: int = EOS_ID
                       ) -> Callable[[Any, Any, Any], dict[str, np.ndarray]]:
  """A jitted :func:`output_statistics`: ``(params, inputs [B, L], tokens [B, T]) -> dict``.

  With a partitioner (and the parameters' shardings) the batch is sharded over 'data' as in
  training; the results come back as numpy float32 [B] arrays.
  """
  def fn(params, inputs, tokens):
    return output_statistics(model, params, inputs, tokens, gamma=gamma, eos_id=eos_id)

  if partitioner is None:
    jitted = jax.jit(fn)

    def run(params, inputs, tokens):
      return jax.device_get(jitted(params, inputs, tokens))
    return run
  batch = partitioner.batch_sharding()
  jitted = jax.jit(fn, in_shardings=(param_shardings, batch, batch), out_shardings=batch)

  def run_sharded(params, inputs, tokens):
    with partitioner.activate():
      return jax.device_get(jitted(params, inputs, tokens))
  return run_sharded


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
