"""Objectives: glue between a model and a pure loss in `irl_lm.losses`.

An objective is a callable `(params, batch, rng, model) -> (loss, metrics)`, chosen in gin and
closed over when the train step is built, so switching method never touches the step or loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Protocol

import jax

from irl_lm.losses import iqlearn, mle

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class Objective(Protocol):
  """What the train step needs from a method."""

  def __call__(self, params: Any, batch: Batch, rng: Optional[jax.Array],
               model: Any) -> tuple[jax.Array, Metrics]:
    ...


def _dropout_rng(model: Any, rng: Optional[jax.Array]) -> Optional[jax.Array]:
  return rng if getattr(model.config, "dropout_rate", 0.0) > 0 else None


@dataclasses.dataclass(frozen=True)
class MLE:
  """Maximum likelihood (teacher forcing), optionally with an entropy bonus and z-loss.

  Attributes:
    entropy_weight: β of the paper's "MLE + entropy" baseline (loss −= β·mean entropy).
    z_loss: T5X-style penalty on log Z = V(s) squared (0 disables it).
  """
  entropy_weight: float = 0.0
  z_loss: float = 0.0

  def __call__(self, params, batch, rng, model):
    logits = model.logits(params, batch, dropout_rng=_dropout_rng(model, rng))
    return mle.mle_loss(logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"],
                        entropy_weight=self.entropy_weight, z_loss=self.z_loss)


@dataclasses.dataclass(frozen=True)
class IQLearn:
  """Offline IQLearn: MLE plus a χ² penalty on the implicit rewards r = Q − γV'.

  Attributes:
    td_weight: λ, the TD-regularisation strength (0 is exactly MLE).
    gamma: discount γ.
  """
  td_weight: float = 0.1
  gamma: float = 1.0

  def __call__(self, params, batch, rng, model):
    logits = model.logits(params, batch, dropout_rng=_dropout_rng(model, rng))
    return iqlearn.iqlearn_loss(
        logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"],
        td_weight=self.td_weight, gamma=self.gamma,
        segment_ids=batch.get("decoder_segment_ids"))
