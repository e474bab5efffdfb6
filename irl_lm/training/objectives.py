"""Objectives: glue between a model and a pure loss in `irl_lm.losses`.

An offline objective (MLE, IQLearn) is a callable `(params, batch, rng, model) -> (loss,
metrics)`. An online one (online IQLearn, GAIL) is an `OnlineObjective`: it also draws samples
from the current policy (no gradient) and may carry extra state in `TrainState.extra` (GAIL's
discriminator and frozen initial policy). Either kind is chosen in gin and closed over when the
train step is built, so switching method never touches the step or the loop.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Protocol

import jax
import jax.numpy as jnp
import optax

from irl_lm.decoding import search
from irl_lm.decoding.config import DecodingConfig
from irl_lm.losses import gail, iqlearn, mle, soft_q
from irl_lm.models import discriminator as discriminator_lib
from irl_lm.models import layers
from irl_lm.training import state as state_lib

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class Objective(Protocol):
  """What the train step needs from a method."""

  def __call__(self, params: Any, batch: Batch, rng: Optional[jax.Array],
               model: Any) -> tuple[jax.Array, Metrics]:
    ...


def _dropout_rng(model: Any, rng: Optional[jax.Array]) -> Optional[jax.Array]:
  return rng if getattr(model.config, "dropout_rate", 0.0) > 0 else None


def _implicit_reward_metrics(logits_BTV: jax.Array, batch: Batch) -> Metrics:
  """Diagnostics of the soft-Q view for methods that do not train it (gamma = 1).

  Returns {'td_loss': mean r^2, 'reward_mean': mean r} over the batch's real tokens, computed
  without gradient (they only feed the logs).
  """
  logits_BTV = jax.lax.stop_gradient(logits_BTV)
  weights_BT = batch["decoder_loss_weights"]
  rewards_BT = soft_q.implicit_rewards(logits_BTV, batch["decoder_target_tokens"], weights_BT,
                                       gamma=1.0, segment_ids=batch.get("decoder_segment_ids"))
  return {"td_loss": soft_q.weighted_mean(jnp.square(rewards_BT), weights_BT),
          "reward_mean": soft_q.weighted_mean(rewards_BT, weights_BT)}


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
    """`mle.mle_loss` of `model.logits(params, batch)` [B, T, V].

    Returns:
      (loss, metrics): those of `mle_loss` plus the implicit-reward diagnostics 'td_loss' and
      'reward_mean' (gamma = 1, no gradient) logged for every method.
    """
    logits = model.logits(params, batch, dropout_rng=_dropout_rng(model, rng))
    loss, metrics = mle.mle_loss(
        logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"],
        entropy_weight=self.entropy_weight, z_loss=self.z_loss)
    return loss, dict(metrics, **_implicit_reward_metrics(logits, batch))


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


# ----------------------------------------------------------------------------------------------
# Online objectives: samples from the current policy, optional extra train state.
# ----------------------------------------------------------------------------------------------

# Stream id of the sampling key: the samples of a step use `fold_in(state.rng, SAMPLE_STREAM)`,
# whether they are drawn inside the step or by the separately jitted sampler, so both give the
# same samples.
SAMPLE_STREAM = 0x5A4D


def sampling_rng(state_rng: jax.Array) -> jax.Array:
  """The PRNG key of the samples drawn at a step whose state RNG is `state_rng` (uint32 [2])."""
  return jax.random.fold_in(state_rng, SAMPLE_STREAM)


def _data_axis_size() -> int:
  """Size of the active mesh's 'data' axis while tracing (1 without an active mesh)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 1
  return int(dict(mesh.shape).get("data", 1))


def num_sampled_rows(batch_size: int, fraction: float, data_axis_size: int = 1) -> int:
  """How many of a batch's inputs get a sampled completion.

  `ceil(fraction * batch_size)` rounded up to a multiple of `data_axis_size` (each data shard
  samples the same number of its own rows), at least one per shard, at most the batch.

  Args:
    batch_size: B (a multiple of `data_axis_size`).
    fraction: in [0, 1].
    data_axis_size: devices along the mesh's 'data' axis.

  Returns:
    int S with `data_axis_size <= S <= B` and `S % data_axis_size == 0`.
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"the sampled fraction must be in [0, 1], got {fraction}")
  per_shard = max(1, math.ceil(fraction * batch_size / data_axis_size - 1e-9))
  return min(per_shard * data_axis_size, batch_size)


def _take_rows(x: jax.Array, num_rows: int, data_axis_size: int) -> jax.Array:
  """The first `num_rows / D` rows of each of the D data shards of x [B, ...] -> [S, ...].

  A reshape and a slice along an unsharded axis: every device keeps its own rows.
  """
  batch = x.shape[0]
  per_shard = num_rows // data_axis_size
  x = x.reshape((data_axis_size, batch // data_axis_size) + x.shape[1:])[:, :per_shard]
  return x.reshape((num_rows,) + x.shape[2:])


class OnlineObjective:
  """Base of objectives that learn from the policy's own samples (and may carry extra state).

  The train step (`irl_lm.training.step`) runs, for such an objective:
    1. `samples = sample(params, batch, sampling_rng(state.rng), model)`, without gradient,
       either inside the jitted step or in a separately jitted sampler feeding it
       (`sample_in_step`);
    2. `extra, aux, metrics = prepare(params, state.extra, batch, samples, rng, model)`:
       updates that take no policy gradient (GAIL's discriminator step);
    3. `loss(params, extra, aux, batch, samples, rng, model)`, differentiated w.r.t. params.
  `init_extra` and `extra_shardings` build and lay out `TrainState.extra` (None by default).

  Subclasses are frozen dataclasses with the fields `sampling` (a `DecodingConfig` with
  method 'sample' or 'greedy') and `sample_in_step`, and define `sample_fraction` (property or
  field) and `loss`.
  """

  sampling: DecodingConfig
  sample_in_step: bool
  sample_fraction: float

  def _check_sampling(self) -> None:
    if self.sampling.method not in ("sample", "greedy") or self.sampling.calculator:
      raise ValueError(f"{type(self).__name__}.sampling must sample (method 'sample' or "
                       f"'greedy', no calculator), got {self.sampling.describe()}.")

  def sample(self, params: Any, batch: Batch, rng: jax.Array, model: Any) -> dict[str, jax.Array]:
    """Completions of a fraction of the batch's inputs, drawn from the policy `params`.

    Args:
      params: the policy parameters (the caller stops their gradient).
      batch: the data batch (the model's unpacked features, [B, ...]).
      rng: PRNG key.
      model: has `init_decode_state` / `decode_step`.

    Returns:
      `model.teacher_forcing_batch(...)` of S = `num_sampled_rows(B, sample_fraction, data
      axis)` prompts and their sampled completions.
    """
    if "decoder_segment_ids" in batch:
      raise ValueError("online objectives sample completions per input and need unpacked "
                       "batches: set TrainSettings.pack = False.")
    prompts_BL = model.prompts(batch)
    data_axis = _data_axis_size()
    num_rows = num_sampled_rows(prompts_BL.shape[0], self.sample_fraction, data_axis)
    prompts_SL = layers.constrain(_take_rows(prompts_BL, num_rows, data_axis),
                                  ("batch", "length"))
    out = search.temperature_sample(
        model, params, prompts_SL, rng, max_decode_length=model.continuation_length(batch),
        temperature=self.sampling.sampling_temperature, top_k=self.sampling.top_k,
        top_p=self.sampling.top_p)
    return model.teacher_forcing_batch(prompts_SL, out.tokens, out.lengths)

  def init_extra(self, params: Any, rng: jax.Array, *, model: Any,
                 input_shapes: Mapping[str, Any]) -> Any:
    """The objective's part of the train state, built from the initial policy `params`."""
    del params, rng, model, input_shapes
    return None

  def extra_shardings(self, abstract_extra: Any, *, model: Any, input_shapes: Mapping[str, Any],
                      partitioner: Any, param_shardings: Any) -> Any:
    """NamedShardings with the structure of `abstract_extra` (None when there is none)."""
    del abstract_extra, model, input_shapes, partitioner, param_shardings
    return None

  def prepare(self, params: Any, extra: Any, batch: Batch, samples: Batch, rng: jax.Array,
              model: Any) -> tuple[Any, Any, Metrics]:
    """Work before the policy loss that takes no policy gradient.

    Returns:
      (new extra, aux passed to `loss`, metrics). The default does nothing.
    """
    del params, batch, samples, rng, model
    return extra, None, {}

  def loss(self, params: Any, extra: Any, aux: Any, batch: Batch, samples: Batch,
           rng: Optional[jax.Array], model: Any) -> tuple[jax.Array, Metrics]:
    """The policy loss (differentiated w.r.t. `params`) and its metrics."""
    raise NotImplementedError


def _sequences(logits: jax.Array, features: Batch) -> soft_q.Sequences:
  return soft_q.Sequences(logits, features["decoder_target_tokens"],
                          features["decoder_loss_weights"], features.get("decoder_segment_ids"))


@dataclasses.dataclass(frozen=True)
class IQLearnOnline(OnlineObjective):
  """Online IQLearn: the value-difference term over a mixture of data and policy samples.

  Each step, `ceil(online_mix * B)` of the batch's inputs (rounded up to a multiple of the
  mesh's data axis) get one completion sampled from the current policy; the loss is
  `iqlearn.iqlearn_online_loss` with mixture weight `online_mix` (docs/design.md#objectives).

  Attributes:
    td_weight: λ, the χ² (TD) regularisation strength.
    gamma: discount γ.
    online_mix: α, the weight of the samples in the mixture (the paper uses 0.1); also the
      fraction of inputs that are sampled (at least one per data shard: with α = 0 those
      samples are drawn and ignored; use `IQLearn` for offline training).
    td_on: 'mixture' or 'data': where the χ² penalty is taken.
    sampling: how the completions are drawn (`DecodingConfig`, method 'sample' with
      temperature / top_k / top_p, or 'greedy'; its seed is unused: the train state's RNG
      draws them).
    sample_in_step: draw the samples inside the jitted train step (True) or with a separately
      jitted sampler whose output feeds the step (False); same samples either way.
  """
  td_weight: float = 0.1
  gamma: float = 1.0
  online_mix: float = 0.1
  td_on: str = "mixture"
  sampling: DecodingConfig = DecodingConfig("sample", temperature=1.0)
  sample_in_step: bool = True

  def __post_init__(self):
    if self.td_on not in iqlearn.TD_ON_CHOICES:
      raise ValueError(f"IQLearnOnline.td_on must be one of {iqlearn.TD_ON_CHOICES}, got "
                       f"{self.td_on!r}")
    num_sampled_rows(1, self.online_mix)  # validates the range
    self._check_sampling()

  @property
  def sample_fraction(self) -> float:
    """Fraction of the batch's inputs that are sampled: `online_mix`."""
    return self.online_mix

  def loss(self, params, extra, aux, batch, samples, rng, model):
    """`iqlearn_online_loss` of the policy's logits on the data [B, T] and the samples [S, T].

    Args:
      params: policy parameters (differentiated).
      extra, aux: unused (None).
      batch: the data, encoder-decoder features [B, ...]; samples: `sample`'s output [S, ...].
      rng: dropout key (used only when the model has dropout).
      model: the policy model.

    Returns:
      (loss float32 scalar, metrics: see `iqlearn.iqlearn_online_loss`).
    """
    del extra, aux
    data_rng = sample_rng = None
    if _dropout_rng(model, rng) is not None:
      data_rng, sample_rng = jax.random.split(rng)
    data_logits = model.logits(params, batch, dropout_rng=data_rng)
    sample_logits = model.logits(params, samples, dropout_rng=sample_rng)
    return iqlearn.iqlearn_online_loss(
        _sequences(data_logits, batch), _sequences(sample_logits, samples),
        td_weight=self.td_weight, gamma=self.gamma, online_mix=self.online_mix,
        td_on=self.td_on)


@dataclasses.dataclass(frozen=True)
class GAIL(OnlineObjective):
  """GAIL: a discriminator of (prefix, token) pairs and a policy-gradient policy update.

  The discriminator is a model of the policy's family (a T5 1.1 encoder-decoder, or a
  decoder-only stack fed prompt and continuation unshifted) of preset `discriminator_size`
  (same vocabulary and activation dtype as the policy) with a scalar head per target position
  (`irl_lm.models.discriminator.DiscriminatorModel.for_policy`). Its parameters and optimiser state (Adam) live in
  `TrainState.extra` together with a frozen copy of the initial policy (the KL reference; only
  when `kl_weight != 0`). Each step: sample completions for `sample_fraction` of the inputs;
  one discriminator step on data (label 1) vs samples (label 0); per-token rewards
  `log D − log(1 − D)` of the samples from the discriminator before its step; then the policy
  loss `gail.gail_policy_loss` (returns-to-go, baseline, `kl_weight`·KL(π‖π_init),
  `mle_weight`·MLE on the data, `entropy_weight`·entropy bonus). Start it from an MLE
  checkpoint (`train.init_from`): the reference policy is whatever the run starts from.

  Attributes:
    gamma: discount of the returns-to-go.
    baseline: 'batch_mean' (leave-one-out per-position batch mean) or 'none'.
    kl_weight, mle_weight, entropy_weight: coefficients of the policy regularisers.
    discriminator_size: preset of the discriminator in the policy's family ('tiny', 'small',
      ... for T5; 'tiny', '1b', ... for decoder-only).
    discriminator_overrides: optional config fields for it (e.g. {'num_encoder_layers': 1}).
    discriminator_learning_rate: Adam learning rate of the discriminator.
    discriminator_grad_clip_norm: clip its gradients to this global norm (0 disables).
    sample_fraction: fraction of the batch's inputs sampled each step.
    sampling, sample_in_step: as `IQLearnOnline`.
  """
  gamma: float = 1.0
  baseline: str = "batch_mean"
  kl_weight: float = 0.1
  mle_weight: float = 0.0
  entropy_weight: float = 0.0
  discriminator_size: str = "tiny"
  discriminator_overrides: Optional[Mapping[str, Any]] = None
  discriminator_learning_rate: float = 1e-4
  discriminator_grad_clip_norm: float = 1.0
  sample_fraction: float = 1.0
  sampling: DecodingConfig = DecodingConfig("sample", temperature=1.0)
  sample_in_step: bool = True

  def __post_init__(self):
    if self.baseline not in gail.BASELINES:
      raise ValueError(f"GAIL.baseline must be one of {gail.BASELINES}, got {self.baseline!r}")
    num_sampled_rows(1, self.sample_fraction)  # validates the range
    self._check_sampling()

  def discriminator(self, model: Any) -> discriminator_lib.DiscriminatorModel:
    """The discriminator model for policy `model` (same vocabulary and activation dtype)."""
    return discriminator_lib.DiscriminatorModel.for_policy(model, self.discriminator_size,
                                                           self.discriminator_overrides)

  def discriminator_optimizer(self) -> optax.GradientTransformation:
    """Adam with gradient clipping, the discriminator's own optimiser."""
    tx = optax.adam(self.discriminator_learning_rate)
    if self.discriminator_grad_clip_norm:
      tx = optax.chain(optax.clip_by_global_norm(self.discriminator_grad_clip_norm), tx)
    return tx

  def init_extra(self, params, rng, *, model, input_shapes):
    """{'disc_params', 'disc_opt_state'} and, when kl_weight != 0, 'ref_params' = `params`.

    Args:
      params: the initial policy parameters (random or loaded), kept as the frozen reference.
      rng: initialises the discriminator.
      model: the policy model (gives the vocabulary and activation dtype).
      input_shapes: the policy's `model.input_shapes(B, feature_lengths)`.
    """
    disc_params = self.discriminator(model).init(rng, input_shapes)
    extra = {"disc_params": disc_params,
             "disc_opt_state": self.discriminator_optimizer().init(disc_params)}
    if self.kl_weight != 0:
      extra["ref_params"] = params
    return extra

  def extra_shardings(self, abstract_extra, *, model, input_shapes, partitioner,
                      param_shardings):
    """Discriminator parameters from its logical axes (as the policy's), its Adam moments like
    the parameters they mirror, the reference policy like the policy (`param_shardings`)."""
    disc_shardings = partitioner.shardings_for(
        self.discriminator(model).param_logical_axes(input_shapes), abstract_extra["disc_params"])
    out = {"disc_params": disc_shardings,
           "disc_opt_state": state_lib.mirror_shardings(
               abstract_extra["disc_opt_state"], abstract_extra["disc_params"], disc_shardings,
               partitioner)}
    if "ref_params" in abstract_extra:
      out["ref_params"] = param_shardings
    return out

  def prepare(self, params, extra, batch, samples, rng, model):
    """One discriminator step (data = 1, samples = 0) and the samples' rewards.

    Returns:
      (extra with the updated discriminator, rewards float32 [S, T] = log D - log(1 - D) of the
      samples under the discriminator before its step, metrics of `gail.discriminator_loss`
      plus 'disc_grad_norm').
    """
    del params, rng
    disc = self.discriminator(model)

    def disc_loss(disc_params):
      data_logits = disc.scores(disc_params, batch)
      sample_logits = disc.scores(disc_params, samples)
      loss, metrics = gail.discriminator_loss(
          data_logits, batch["decoder_loss_weights"], sample_logits,
          samples["decoder_loss_weights"])
      return loss, (metrics, sample_logits)

    (_, (metrics, sample_logits)), grads = jax.value_and_grad(disc_loss, has_aux=True)(
        extra["disc_params"])
    tx = self.discriminator_optimizer()
    updates, opt_state = tx.update(grads, extra["disc_opt_state"], extra["disc_params"])
    new_extra = dict(extra, disc_params=optax.apply_updates(extra["disc_params"], updates),
                     disc_opt_state=opt_state)
    rewards = gail.discriminator_rewards(jax.lax.stop_gradient(sample_logits),
                                         samples["decoder_loss_weights"])
    metrics = dict(metrics, disc_grad_norm=optax.global_norm(grads))
    return new_extra, rewards, metrics

  def loss(self, params, extra, aux, batch, samples, rng, model):
    """`gail.gail_policy_loss` on the samples [S, T] with rewards `aux` [S, T].

    The data [B, T] feed the MLE term (and the metrics); the frozen reference policy's logits on
    the samples feed the KL term.

    Returns:
      (loss float32 scalar, metrics: see `gail.gail_policy_loss`).
    """
    sample_logits = model.logits(params, samples)
    reference_logits = None
    if "ref_params" in extra:
      reference_logits = jax.lax.stop_gradient(model.logits(extra["ref_params"], samples))
    # Without an MLE term the data only feeds the metrics: no gradient through it.
    data_params = params if self.mle_weight else jax.lax.stop_gradient(params)
    data_logits = model.logits(data_params, batch, dropout_rng=_dropout_rng(model, rng))
    return gail.gail_policy_loss(
        _sequences(sample_logits, samples), aux, reference_logits_BTV=reference_logits,
        data=_sequences(data_logits, batch), gamma=self.gamma, baseline=self.baseline,
        kl_weight=self.kl_weight, mle_weight=self.mle_weight,
        entropy_weight=self.entropy_weight)
