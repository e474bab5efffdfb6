"""Maximum-likelihood (teacher-forced cross-entropy) loss, docs/design.md#objectives.

``L = -mean log pi(a_t|s_t) - entropy_weight * mean H(pi(.|s_t)) + z_loss * mean V(s_t)^2``

All means are per-token over real target tokens: ``sum(w * x) / max(sum(w), 1)``.
Shapes: B batch, T decoder length, V vocabulary.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from irl_lm.losses import soft_q

__all__ = ["mle_loss"]


def _is_zero(coefficient: float | jax.Array) -> bool:
  """True for a Python (or numpy) number equal to 0; traced coefficients are never "zero"."""
  return isinstance(coefficient, (int, float)) and coefficient == 0


def mle_loss(logits_BTV: jax.Array,
             targets_BT: jax.Array,
             weights_BT: jax.Array,
             *,
             entropy_weight: float | jax.Array = 0.0,
             z_loss: float | jax.Array = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Token-level negative log-likelihood with optional entropy bonus and z-loss.

  ``loss = nll - entropy_weight * entropy + z_loss * mean(V^2)`` where ``nll`` is the per-token
  mean of ``-log pi(a_t|s_t)``, ``entropy`` the per-token mean of ``H(pi(.|s_t))`` (nats), and
  ``V = logsumexp(logits)`` (T5X's z-loss, which keeps the softmax normaliser near 1).
  Everything is computed in float32 (logits are cast first). A batch whose weights are all zero
  gives loss 0 and zero gradients, not NaN.

  Args:
    logits_BTV: logits [B, T, V], any float dtype.
    targets_BT: int target token ids [B, T].
    weights_BT: loss weights [B, T], float or int, 0 on padding.
    entropy_weight: coefficient beta of the entropy bonus (>= 0 encourages entropy).
    z_loss: coefficient of the squared-logsumexp penalty.

  Returns:
    ``(loss, metrics)``: loss a float32 scalar; metrics a dict of float32 scalars:
      'loss': the loss,
      'nll': mean -log pi(a_t|s_t),
      'entropy': mean policy entropy,
      'z_loss': the z-loss term added to the loss (z_loss * mean V^2),
      'value_mean': mean V(s_t) (the log-normaliser),
      'accuracy': fraction of real tokens whose argmax is the target,
      'num_tokens': number of real target tokens (weight > 0).
  """
  stats = soft_q.token_statistics(logits_BTV, targets_BT)
  nll = -soft_q.weighted_mean(stats.log_probs, weights_BT)
  mean_entropy = soft_q.weighted_mean(stats.entropy, weights_BT)
  mean_square_value = soft_q.weighted_mean(jnp.square(stats.values), weights_BT)
  # A term whose coefficient is a literal 0 contributes 0 to the loss and to the gradient;
  # stopping its gradient says so to XLA, which otherwise back-propagates through the entropy
  # (an extra pass over [B, T, V]) only to multiply the result by 0.
  entropy_term = mean_entropy if not _is_zero(entropy_weight) else jax.lax.stop_gradient(
      mean_entropy)
  square_value_term = (mean_square_value if not _is_zero(z_loss)
                       else jax.lax.stop_gradient(mean_square_value))
  z_term = jnp.asarray(z_loss, jnp.float32) * square_value_term
  loss = nll - jnp.asarray(entropy_weight, jnp.float32) * entropy_term + z_term
  metrics = {
      "loss": loss,
      "nll": nll,
      "entropy": mean_entropy,
      "z_loss": z_term,
      "value_mean": soft_q.weighted_mean(stats.values, weights_BT),
      "accuracy": soft_q.weighted_mean(stats.correct, weights_BT),
      "num_tokens": soft_q.num_real_tokens(weights_BT),
  }
  return loss, metrics
