"""Exact metrics of a model trained on the known-distribution task (its teacher is known).

The demonstrations of :mod:`irl_lm.data.known_distribution` are samples of a teacher whose
conditionals are known, so these are measured exactly (per position) rather than by proxies:

* forward KL, per token: on K held-out teacher samples per prompt, the mean over positions of
  the exact ``KL(p_t || pi_t)`` between the teacher's and the (teacher-forced) model's next-token
  distributions; beside it the model's NLL minus the teacher's exact per-token entropy.
* reverse KL, per token: on K model samples per prompt (temperature 1), the mean of
  ``log pi(y_t) - log p(y_t)``, and the teacher's mean log-probability of the model's tokens at
  each position (does quality decay along the sequence?), beside the same for teacher samples.
* coverage: the teacher probability mass of the distinct samples of a prompt (K model samples;
  beside it K teacher samples), read on their first COVERAGE_PREFIX_LENGTH tokens (whole
  sequences and every prefix length are reported too), and the model's per-token entropy
  along its samples.
* within-prompt Spearman between the teacher log-probability of the K model samples and the
  model's summed implicit reward (at the run's gamma), its log pi and its length-normalised log
  pi, averaged over prompts. With gamma = 1 the summed reward is ``log pi(y|x) + V(s_0)``, so
  the reward and log pi rank a prompt's samples identically.
* baselines: a unigram model of the train continuations (add-one smoothed) and the uniform
  distribution, each with EOS forced at the teacher's last position; their forward and reverse
  KL are exact (dynamic programming over the teacher's states).

A model token outside the teacher's support (PAD, an id that is no symbol, a symbol where the
teacher must end) has teacher probability 0: a sample is scored up to that token, and the
fraction of such samples is reported as ``off_support_fraction``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irl_lm.data import known_distribution as kd
from irl_lm.losses import soft_q

SAMPLES_PER_PROMPT = 8
# `coverage` is read on prefixes of this many tokens: whole continuations carry ~27 nats with
# the default teacher, so K samples of them hold a vanishing mass (also reported).
COVERAGE_PREFIX_LENGTH = 3
TOP_LEVEL_KEYS = ("forward_kl", "reverse_kl", "coverage", "reward_teacher_spearman")


# ----------------------------------------------------------------------------- pure functions


def teacher_rows(teacher: kd.Teacher, prompts_NL: np.ndarray, indices_NT: np.ndarray
                 ) -> np.ndarray:
  """The teacher's next-token log-distributions along sequences (teacher forcing).

  Args:
    teacher: the teacher.
    prompts_NL: int [N, L] prompt symbols.
    indices_NT: int [N, T] teacher indices (anything after a sequence's end is ignored but
      must lie in ``[0, S]``).

  Returns:
    float64 [N, T, S+1]: row t is ``log p(. | x, y_<t)`` (with ``prev`` clipped to a symbol).
  """
  n, num_t = indices_NT.shape
  out = np.empty((n, num_t, teacher.num_symbols + 1))
  prev_NT = np.concatenate([prompts_NL[:, -1:], np.minimum(indices_NT[:, :-1],
                                                           teacher.num_symbols - 1)], axis=1)
  tables: dict[tuple[int, ...], np.ndarray] = {}
  for i, prompt in enumerate(prompts_NL):
    key = tuple(int(s) for s in prompt)
    if key not in tables:
      tables[key] = teacher.transition_log_probs(prompt)
    out[i] = tables[key][np.arange(num_t), prev_NT[i]]
  return out


def scored_mask(indices_NT: np.ndarray, teacher_token_lp_NT: np.ndarray, eos: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Which tokens of decoded sequences are scored, and which sequences left the support.

  Args:
    indices_NT: int [N, T] teacher indices, -1 where a token is none of the teacher's.
    teacher_token_lp_NT: float [N, T] the teacher's log-probability of each token.
    eos: the teacher's EOS index.

  Returns:
    (scored bool [N, T]: tokens up to and including the first EOS, before the first token of
    teacher probability 0; emitted bool [N, T]: the same plus that token; off_support bool
    [N]: the sequences that hold such a token before their EOS).
  """
  impossible = (indices_NT < 0) | ~np.isfinite(teacher_token_lp_NT)
  is_eos = indices_NT == eos
  before_end = (np.cumsum(is_eos, axis=1) - is_eos) == 0
  bad_before = np.cumsum(impossible, axis=1)
  scored = before_end & (bad_before == 0)
  emitted = before_end & (bad_before - impossible == 0)
  return scored, emitted, np.any(impossible & before_end, axis=1)


def per_position_kl(log_p_NTV: np.ndarray, log_q_NTV: np.ndarray) -> np.ndarray:
  """Exact ``KL(p_t || q_t)`` at every position: float64 [N, T] (``0 log 0 = 0``)."""
  p = np.exp(log_p_NTV)
  support = p > 0
  diff = np.where(support, log_p_NTV, 0.0) - np.where(support, log_q_NTV, 0.0)
  return np.sum(np.where(support, p * diff, 0.0), axis=-1)


def entropy_of(log_p_NTV: np.ndarray) -> np.ndarray:
  """Per-position entropy of log-distributions [..., V]: [...] (``0 log 0 = 0``)."""
  p = np.exp(log_p_NTV)
  return -np.sum(np.where(p > 0, p * np.where(p > 0, log_p_NTV, 0.0), 0.0), axis=-1)


def masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
  """Mean of `values` where `mask`; NaN when the mask is empty."""
  total = float(np.sum(mask))
  return float(np.sum(np.where(mask, values, 0.0)) / total) if total else float("nan")


def by_position(values_NT: np.ndarray, mask_NT: np.ndarray) -> list[Optional[float]]:
  """Mean over rows at each position where `mask` (None where no row reaches it)."""
  counts = np.sum(mask_NT, axis=0)
  sums = np.sum(np.where(mask_NT, values_NT, 0.0), axis=0)
  return [float(s / c) if c else None for s, c in zip(sums, counts)]


def coverage_by_prefix(groups: Sequence[Sequence[Sequence[int]]],
                       token_log_probs: Sequence[Sequence[np.ndarray]], max_length: int
                       ) -> np.ndarray:
  """Teacher probability mass of the distinct prefixes of each group's sequences.

  The events "the first m tokens are ..." (a sequence that ended sooner: "the sequence is
  ...") of distinct prefixes are disjoint, so their probabilities add up to at most 1.

  Args:
    groups: P groups of K sequences of teacher indices (each up to its EOS, or up to and
      including a token of teacher probability 0).
    token_log_probs: the teacher's log-probability of each of their tokens (-inf: 0).
    max_length: T.

  Returns:
    float64 [P, T]: column m-1 is the mass of the distinct length-m prefixes (column T-1: of
    the distinct whole sequences).
  """
  out = np.zeros((len(groups), max_length))
  for g, (seqs, lps) in enumerate(zip(groups, token_log_probs)):
    cumulative = [np.cumsum(np.asarray(lp, np.float64)) for lp in lps]
    for m in range(1, max_length + 1):
      distinct = {}
      for seq, cum in zip(seqs, cumulative):
        if len(seq):
          distinct[tuple(seq[:m])] = cum[min(m, len(seq)) - 1]
      out[g, m - 1] = float(np.sum(np.exp(np.asarray(list(distinct.values()), np.float64))))
  return out


def within_group_spearman(scores_PK: np.ndarray, targets_PK: np.ndarray
                          ) -> tuple[Optional[float], int]:
  """Mean over groups of Spearman's rho (scipy) between a score and a target within a group.

  Returns:
    (mean rho over the groups where it is defined, or None; how many groups that is). A group
    where either row is constant has no rho.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  rhos = []
  for scores, targets in zip(np.asarray(scores_PK, np.float64), np.asarray(targets_PK,
                                                                           np.float64)):
    if np.all(scores == scores[0]) or np.all(targets == targets[0]):
      continue
    rho = float(stats.spearmanr(scores, targets).statistic)
    if np.isfinite(rho):
      rhos.append(rho)
  return (float(np.mean(rhos)) if rhos else None), len(rhos)


def unigram_log_probs(continuations: Sequence[Sequence[int]], num_symbols: int) -> np.ndarray:
  """Add-one smoothed unigram of teacher indices (EOS included): float64 [S+1] log-probs."""
  counts = np.ones(num_symbols + 1)
  for seq in continuations:
    np.add.at(counts, np.asarray(seq, np.int64), 1.0)
  return np.log(counts / counts.sum())


def context_free_table(log_probs_V: np.ndarray, max_length: int) -> np.ndarray:
  """A policy that ignores its context, with EOS forced at the last position: [T, S, S+1]."""
  num_symbols = log_probs_V.shape[0] - 1
  table = np.broadcast_to(log_probs_V, (max_length, num_symbols, num_symbols + 1)).copy()
  table[-1] = -np.inf
  table[-1, :, num_symbols] = 0.0
  return table


def baseline_kls(teacher: kd.Teacher, prompts_NL: np.ndarray, log_probs_V: np.ndarray
                 ) -> dict[str, float]:
  """Exact per-token forward and reverse KL of a context-free baseline over the prompts."""
  table = context_free_table(log_probs_V, teacher.max_length)
  forward, reverse = np.zeros(2), np.zeros(2)
  for prompt in prompts_NL:
    log_p, start = teacher.transition_log_probs(prompt), teacher.start_state(prompt)
    forward += kd.markov_kl(log_p, table, start)
    reverse += kd.markov_kl(table, log_p, start)
  return {"forward_kl": float(forward[0] / forward[1]),
          "reverse_kl": float(reverse[0] / reverse[1])}


def _none_if_nan(x: float) -> Optional[float]:
  return None if x is None or not np.isfinite(x) else float(x)


# ----------------------------------------------------------------------------- the model side


def teacher_forced(model: Any, params: Any, prompts: jax.Array, tokens: jax.Array, *,
                   gamma: float) -> dict[str, jax.Array]:
  """Teacher-forces the model on `tokens` [B, T]: ``log_probs`` [B, T, V] (float32),
  ``reward`` [B] (summed implicit reward at `gamma`), ``log_prob`` [B], ``num_tokens`` [B]."""
  batch = model.teacher_forcing_batch(prompts, tokens)
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  logits = model.logits(params, batch)
  stats = soft_q.token_statistics(logits, targets)
  rewards = soft_q.rewards_from_values(stats.target_logits, stats.values, weights, gamma=gamma)
  return {"log_probs": jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1),
          "reward": jnp.sum(rewards, axis=1),
          "log_prob": jnp.sum(stats.log_probs * weights, axis=1),
          "num_tokens": jnp.sum(weights, axis=1)}


def make_teacher_forced_fn(model: Any, *, gamma: float, partitioner: Any, param_shardings: Any
                           ) -> Callable[[Any, np.ndarray, np.ndarray], dict[str, Any]]:
  """A jitted :func:`teacher_forced`, the batch sharded over 'data' as in training."""
  batch = partitioner.batch_sharding()
  jitted = partitioner.jit(
      lambda params, prompts, tokens: teacher_forced(model, params, prompts, tokens,
                                                     gamma=gamma),
      in_shardings=(param_shardings, batch, batch), out_shardings=batch)
  return lambda params, prompts, tokens: jax.device_get(jitted(params, prompts, tokens))


@dataclasses.dataclass
class ModelAccess:
  """What the analysis asks of the model (ids in, numpy out).

  Attributes:
    teacher_forced: ``(prompt ids [N, L], token ids [N, T]) -> dict`` as :func:`teacher_forced`.
    sample: ``(prompt ids [N, L]) -> token ids [N, T]``, one temperature-1 sample per row.
    max_length: T, the decoded length.
  """
  teacher_forced: Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]]
  sample: Callable[[np.ndarray], np.ndarray]
  max_length: int


def _to_ids(sequences: Sequence[Sequence[int]], num_symbols: int, length: int) -> np.ndarray:
  """Teacher index sequences -> model ids [N, T] (PAD after EOS)."""
  ids = kd.support_ids(num_symbols)
  out = np.zeros((len(sequences), length), np.int32)
  for i, seq in enumerate(sequences):
    out[i, :len(seq)] = ids[np.asarray(seq, np.int64)]
  return out


def _token_lp(rows_NTV: np.ndarray, indices_NT: np.ndarray) -> np.ndarray:
  return np.take_along_axis(rows_NTV, np.maximum(indices_NT, 0)[..., None], axis=-1)[..., 0]


def _on_teacher_samples(teacher: kd.Teacher, prompts_MK: np.ndarray, ids_MK: np.ndarray,
                        access: "ModelAccess", rng: np.random.Generator) -> dict[str, Any]:
  """One teacher sample per row; the exact per-position KL to the teacher-forced model."""
  s, eos, length = teacher.num_symbols, teacher.eos, access.max_length
  seqs = teacher.sample(prompts_MK, rng)
  idx = np.full((len(seqs), length), eos, np.int64)
  for i, seq in enumerate(seqs):
    idx[i, :len(seq)] = seq
  mask = np.arange(length)[None, :] < np.array([len(q) for q in seqs])[:, None]
  rows = teacher_rows(teacher, prompts_MK, idx)
  model = access.teacher_forced(ids_MK, _to_ids(seqs, s, length))
  q_rows = model["log_probs"].astype(np.float64)[..., kd.support_ids(s)]
  token_lp = _token_lp(rows, idx)
  return {"sequences": seqs, "mask": mask, "token_lp": token_lp,
          "token_lps": [row[:len(seq)] for row, seq in zip(token_lp, seqs)],
          "kl": masked_mean(per_position_kl(rows, q_rows), mask),
          "model_nll": masked_mean(-_token_lp(q_rows, idx), mask)}


def analyse(task: kd.KnownTask, prompts_NL: np.ndarray, prompt_ids_NL: np.ndarray,
            access: ModelAccess, *, gamma: float, samples_per_prompt: int = SAMPLES_PER_PROMPT,
            seed: int = 0) -> dict[str, Any]:
  """Every metric of the module docstring for one model.

  Args:
    task: the known-distribution task (teacher and train continuations).
    prompts_NL: int [N, L] prompt symbols; prompt_ids_NL: the model's prompts [N, L'].
    access: the model's teacher forcing and sampling.
    gamma: discount of the implicit reward.
    samples_per_prompt: K model and K teacher samples per prompt.
    seed: the teacher samples' seed (the model's sampling seed is in `access.sample`).

  Returns:
    ``{forward_kl, reverse_kl, coverage, reward_teacher_spearman, known_distribution: {...}}``.
  """
  teacher, k = task.teacher, samples_per_prompt
  s, eos, length = teacher.num_symbols, teacher.eos, access.max_length
  if length < teacher.max_length:
    raise ValueError(f"the model decodes {length} tokens but the teacher writes up to "
                     f"{teacher.max_length}: set train.feature_lengths' targets >= "
                     f"{teacher.max_length}.")
  prompts_MK = np.repeat(np.asarray(prompts_NL, np.int64), k, axis=0)
  ids_MK = np.repeat(prompt_ids_NL, k, axis=0)

  # Forward: teacher samples, exact per-position KL to the teacher-forced model.
  forward = _on_teacher_samples(teacher, prompts_MK, ids_MK, access,
                                np.random.default_rng([teacher.config.seed, 7, seed]))
  teacher_seqs = forward["sequences"]

  # Reverse: the model's own samples.
  tokens = access.sample(ids_MK)
  m_idx = kd.ids_to_indices(tokens, s)
  m_rows = teacher_rows(teacher, prompts_MK, np.clip(m_idx, 0, eos))
  m_teacher_lp = np.where(m_idx >= 0, _token_lp(m_rows, m_idx), -np.inf)
  m_mask, m_emitted, off_support = scored_mask(m_idx, m_teacher_lp, eos)
  model_on_samples = access.teacher_forced(ids_MK, tokens)
  lp_full = model_on_samples["log_probs"].astype(np.float64)
  m_model_lp = np.take_along_axis(lp_full, tokens[..., None].astype(np.int64), axis=-1)[..., 0]
  with np.errstate(invalid="ignore"):  # -inf - -inf off the scored tokens
    reverse = masked_mean(m_model_lp - m_teacher_lp, m_mask)

  # Coverage (prefixes and whole sequences) and rankings within each prompt.
  n = len(prompts_NL)
  m_seqs = [row[keep] for row, keep in zip(m_idx, m_emitted)]
  m_lps = [row[keep] for row, keep in zip(m_teacher_lp, m_emitted)]
  group = lambda items: [items[i * k:(i + 1) * k] for i in range(n)]
  cover = coverage_by_prefix(group(m_seqs), group(m_lps), length).mean(axis=0)
  t_cover = coverage_by_prefix(group(teacher_seqs), group(forward["token_lps"]),
                               length).mean(axis=0)
  m_seq_lp = np.array([np.sum(lp) if len(seq) and seq[-1] == eos else -np.inf
                       for seq, lp in zip(m_seqs, m_lps)])
  log_pi = model_on_samples["log_prob"].astype(np.float64)
  num_tokens = np.maximum(model_on_samples["num_tokens"].astype(np.float64), 1.0)
  target = m_seq_lp.reshape(n, k)
  prefix = min(COVERAGE_PREFIX_LENGTH, length) - 1
  rho_reward, n_reward = within_group_spearman(
      model_on_samples["reward"].astype(np.float64).reshape(n, k), target)
  rho_lp, _ = within_group_spearman(log_pi.reshape(n, k), target)
  rho_norm, _ = within_group_spearman((log_pi / num_tokens).reshape(n, k), target)

  unigram = unigram_log_probs(task.train_continuations(), s)
  teacher_entropy = teacher.per_token_entropy(prompts_NL)
  details = {
      "teacher_entropy": teacher_entropy,
      "model_nll": forward["model_nll"],
      "nll_minus_teacher_entropy": forward["model_nll"] - teacher_entropy,
      "model_sample_entropy": masked_mean(entropy_of(lp_full), m_mask),
      "teacher_coverage": float(t_cover[prefix]),
      "coverage_prefix_length": prefix + 1,
      "sequence_coverage": float(cover[-1]),
      "teacher_sequence_coverage": float(t_cover[-1]),
      "coverage_by_prefix_length": cover.tolist(),
      "teacher_coverage_by_prefix_length": t_cover.tolist(),
      "model_distinct_fraction": len({(i // k, tuple(q)) for i, q in enumerate(m_seqs)}) / len(
          m_seqs),
      "off_support_fraction": float(np.mean(off_support)),
      "model_mean_length": float(np.mean(np.sum(m_mask, axis=1))),
      "teacher_mean_length": float(np.mean(np.sum(forward["mask"], axis=1))),
      "teacher_logprob_by_position": by_position(m_teacher_lp, m_mask),
      "model_logprob_by_position": by_position(m_model_lp, m_mask),
      "teacher_sample_logprob_by_position": by_position(forward["token_lp"], forward["mask"]),
      "logprob_teacher_spearman": rho_lp,
      "length_normalised_logprob_teacher_spearman": rho_norm,
      "spearman_prompts": n_reward,
      "gamma": float(gamma), "samples_per_prompt": k, "num_prompts": n,
      "baselines": {"unigram": baseline_kls(teacher, prompts_NL, unigram),
                    "uniform": baseline_kls(teacher, prompts_NL, np.full(s + 1, -np.log(s + 1)))},
  }
  return {"forward_kl": forward["kl"], "reverse_kl": _none_if_nan(reverse),
          "coverage": float(cover[prefix]), "reward_teacher_spearman": rho_reward,
          "known_distribution": details}


class KnownDistributionAnalysis:
  """The Evaluator's hook: :func:`analyse` on its split, once per parameters object."""

  def __init__(self, task: kd.KnownTask, evaluator: Any, *, gamma: float,
               samples_per_prompt: int = SAMPLES_PER_PROMPT):
    self.task, self.evaluator, self.gamma = task, evaluator, gamma
    self.samples_per_prompt = samples_per_prompt
    self.prompts = np.array([kd.parse_symbols(ex["inputs_text"]) for ex in evaluator.examples],
                            np.int64)
    self._fn = make_teacher_forced_fn(evaluator.model, gamma=gamma,
                                      partitioner=evaluator.partitioner,
                                      param_shardings=evaluator.param_shardings)
    self._last: Optional[tuple[Any, dict[str, Any]]] = None

  @classmethod
  def for_task(cls, task_name: str, evaluator: Any, *, gamma: float
               ) -> Optional["KnownDistributionAnalysis"]:
    """The analysis when `task_name` is a known-distribution task, else None."""
    task = kd.known_task(task_name)
    return None if task is None else cls(task, evaluator, gamma=gamma)

  def __call__(self, params: Any, sample: Callable[[np.ndarray], np.ndarray]
               ) -> dict[str, Any]:
    """:func:`analyse` with `sample` (``prompt ids -> tokens``); cached for the same `params`."""
    if self._last is not None and self._last[0] is params:
      return self._last[1]
    from irl_lm.evaluation import predict  # pylint: disable=g-import-not-at-top
    batch_size = self.evaluator.batch_size
    access = ModelAccess(
        teacher_forced=lambda p, t: predict.map_batches(
            lambda pb, tb: self._fn(params, pb, tb), [p, t], batch_size=batch_size),
        sample=sample, max_length=self.evaluator.max_decode_length)
    result = analyse(self.task, self.prompts, self.evaluator.prompts, access, gamma=self.gamma,
                     samples_per_prompt=self.samples_per_prompt)
    self._last = (params, result)
    return result
