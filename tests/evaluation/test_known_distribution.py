"""Exact metrics against the known teacher, checked by enumeration on a teacher small enough."""
import itertools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm.data import known_distribution as kd
from irl_lm.evaluation import known_distribution as kde

SMALL = kd.TeacherConfig(num_symbols=3, prompt_length=2, max_length=4, seed=5,
                         eos_bias=-1.0, eos_slope=0.5)
OTHER = kd.TeacherConfig(**{**SMALL.__dict__, "seed": 11})
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def all_continuations(config):
  for n in range(1, config.max_length + 1):
    for body in itertools.product(range(config.num_symbols), repeat=n - 1):
      yield list(body) + [config.num_symbols]


def padded(seqs, length, fill):
  out = np.full((len(seqs), length), fill, np.int64)
  for i, seq in enumerate(seqs):
    out[i, :len(seq)] = seq
  return out


def test_per_position_kl_sums_to_the_sequence_kl_in_expectation():
  p, q = kd.Teacher(SMALL), kd.Teacher(OTHER)
  prompt = np.array([2, 0])
  seqs = list(all_continuations(SMALL))
  idx = padded(seqs, 4, 3)
  prompts = np.repeat(prompt[None], len(seqs), axis=0)
  kl_NT = kde.per_position_kl(kde.teacher_rows(p, prompts, idx),
                              kde.teacher_rows(q, prompts, idx))
  mask = np.arange(4)[None] < np.array([len(y) for y in seqs])[:, None]
  weights = np.array([np.exp(p.log_prob(prompt, y)) for y in seqs])
  expected = sum(w * (p.log_prob(prompt, y) - q.log_prob(prompt, y))
                 for w, y in zip(weights, seqs))
  assert np.sum(weights * np.sum(kl_NT * mask, axis=1)) == pytest.approx(expected, rel=1e-10)
  exact, _ = kd.markov_kl(p.transition_log_probs(prompt), q.transition_log_probs(prompt), 0)
  assert exact == pytest.approx(expected, rel=1e-10)
  assert np.all(kl_NT[:, 3] == 0)  # both must end at the last position


def test_entropy_of_and_masked_helpers():
  with np.errstate(divide="ignore"):
    log_p = np.log(np.array([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]]))
  np.testing.assert_allclose(kde.entropy_of(log_p), [[np.log(2), 0.0]])
  mask = np.array([[True, False]])
  assert kde.masked_mean(np.array([[2.0, np.nan]]), mask) == 2.0
  assert kde.by_position(np.array([[1.0, 5.0], [3.0, 7.0]]),
                         np.array([[True, False], [True, True]])) == [2.0, 7.0]


def test_coverage_by_prefix_counts_distinct_prefixes_once():
  teacher = kd.Teacher(SMALL)
  prompt = [1, 1]
  seqs = list(all_continuations(SMALL))
  lps = [teacher.conditional_log_probs(prompt, y)[np.arange(len(y)), y] for y in seqs]
  everything = kde.coverage_by_prefix([seqs], [lps], 4)
  np.testing.assert_allclose(everything, 1.0, atol=1e-12)
  two = [seqs[5], seqs[5], seqs[20]]  # a duplicate counts once
  two_lps = [lps[5], lps[5], lps[20]]
  cover = kde.coverage_by_prefix([two], [two_lps], 4)[0]
  p5, p20 = (np.exp(teacher.log_prob(prompt, seqs[i])) for i in (5, 20))
  assert cover[3] == pytest.approx(p5 + p20)
  first = {seqs[5][0], seqs[20][0]}
  expected_first = sum(teacher.conditionals(prompt, [s])[0, s] for s in first)
  assert cover[0] == pytest.approx(expected_first)
  assert np.all(np.diff(cover) <= 1e-12)  # longer prefixes hold less mass
  # a sequence cut at a token of probability 0 adds nothing from that length on
  bad = kde.coverage_by_prefix([[[0, -1]]], [[np.array([np.log(0.25), -np.inf])]], 4)[0]
  np.testing.assert_allclose(bad, [0.25, 0.0, 0.0, 0.0])


def test_scored_mask_stops_at_eos_and_at_impossible_tokens():
  idx = np.array([[0, 1, 3, 3], [0, -1, 1, 3], [0, 1, 2, 0], [3, 0, 0, 0]])
  lp = np.zeros((4, 4))
  lp[2, 3] = -np.inf  # a symbol where the teacher must end
  scored, emitted, off = kde.scored_mask(idx, lp, 3)
  np.testing.assert_array_equal(scored, [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 0],
                                         [1, 0, 0, 0]])
  np.testing.assert_array_equal(emitted, [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1],
                                          [1, 0, 0, 0]])
  np.testing.assert_array_equal(off, [False, True, True, False])


def test_within_group_spearman_averages_defined_groups():
  scores = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
  targets = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
  rho, n = kde.within_group_spearman(scores, targets)
  assert (rho, n) == (0.0, 2)
  rho, n = kde.within_group_spearman(scores[:1], np.array([[-np.inf, 0.0, 1.0]]))
  assert (rho, n) == (1.0, 1)
  assert kde.within_group_spearman(scores[2:], targets[2:]) == (None, 0)


def test_unigram_and_baseline_kls_match_enumeration():
  log_q = kde.unigram_log_probs([[0, 0, 3], [1, 3]], 3)
  np.testing.assert_allclose(np.exp(log_q), np.array([3, 2, 1, 3]) / 9)
  teacher = kd.Teacher(SMALL)
  prompts = np.array([[0, 2], [1, 1]])
  table = kde.context_free_table(log_q, 4)
  seqs = list(all_continuations(SMALL))
  forward = reverse = length_p = length_q = 0.0
  for prompt in prompts:
    for y in seqs:
      lp = teacher.log_prob(prompt, y)
      lq = float(np.sum(table[np.arange(len(y)), 0, y]))
      forward += np.exp(lp) * (lp - lq)
      reverse += np.exp(lq) * (lq - lp)
      length_p += np.exp(lp) * len(y)
      length_q += np.exp(lq) * len(y)
  kls = kde.baseline_kls(teacher, prompts, log_q)
  assert kls["forward_kl"] == pytest.approx(forward / length_p, rel=1e-10)
  assert kls["reverse_kl"] == pytest.approx(reverse / length_q, rel=1e-10)


def teacher_as_model(q, vocab_size, seed=0):
  """A ModelAccess whose 'model' is the teacher `q` in token-id space (reward = log pi +
  a constant per prompt, as with gamma = 1)."""
  s, length = q.num_symbols, q.max_length
  rng = np.random.default_rng(seed)

  def prompts_of(prompt_ids):
    return prompt_ids[:, :q.config.prompt_length].astype(np.int64) - 2

  def teacher_forced(prompt_ids, token_ids):
    idx = kd.ids_to_indices(token_ids, s)
    rows = kde.teacher_rows(q, prompts_of(prompt_ids), np.clip(idx, 0, s))
    log_probs = np.full(token_ids.shape + (vocab_size,), -np.inf)
    log_probs[..., kd.support_ids(s)] = rows
    log_probs[..., 0] = -30.0  # PAD: tiny mass, never in the samples
    lp = np.take_along_axis(log_probs, token_ids[..., None].astype(np.int64), axis=-1)[..., 0]
    mask = (np.cumsum(idx == s, axis=1) - (idx == s)) == 0
    log_pi = np.sum(np.where(mask, lp, 0.0), axis=1)
    return {"log_probs": log_probs, "log_prob": log_pi, "num_tokens": mask.sum(axis=1),
            "reward": log_pi + np.sum(prompt_ids, axis=1)}

  def sample(prompt_ids):
    seqs = q.sample(prompts_of(prompt_ids), rng)
    return padded([kd.support_ids(s)[np.asarray(y)] for y in seqs], length, 0).astype(np.int32)

  return kde.ModelAccess(teacher_forced=teacher_forced, sample=sample, max_length=length)


def small_task(config=SMALL):
  teacher = kd.Teacher(config)
  rng = np.random.default_rng(3)
  continuations = teacher.sample(rng.integers(0, config.num_symbols,
                                              (500, config.prompt_length)), rng)
  return kd.KnownTask(teacher, None, None), continuations


def analyse_with(model_config, monkeypatch, k=16, n=24):
  task, continuations = small_task()
  monkeypatch.setattr(kd.KnownTask, "train_continuations", lambda self: continuations)
  prompts = np.random.default_rng(1).integers(0, 3, (n, 2))
  prompt_ids = np.concatenate([prompts + 2, np.ones((n, 1), np.int64)], axis=1)
  access = teacher_as_model(kd.Teacher(model_config), vocab_size=5)
  return task, prompts, kde.analyse(task, prompts, prompt_ids, access, gamma=1.0,
                                    samples_per_prompt=k)


def test_the_teacher_itself_scores_zero_kl_and_full_rank_agreement(monkeypatch):
  task, prompts, out = analyse_with(SMALL, monkeypatch)
  d = out["known_distribution"]
  assert out["forward_kl"] == pytest.approx(0.0, abs=1e-12)
  assert out["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
  assert d["off_support_fraction"] == 0.0
  assert abs(d["nll_minus_teacher_entropy"]) < 0.1
  assert d["teacher_entropy"] == pytest.approx(task.teacher.per_token_entropy(prompts))
  assert abs(out["coverage"] - d["teacher_coverage"]) < 0.1
  # its log pi is the teacher's log-prob: perfect ranking; reward = log pi + const (gamma 1)
  assert out["reward_teacher_spearman"] == pytest.approx(1.0)
  assert d["logprob_teacher_spearman"] == pytest.approx(1.0)
  np.testing.assert_allclose(d["teacher_logprob_by_position"], d["model_logprob_by_position"])
  assert set(d["baselines"]) == {"unigram", "uniform"}
  assert d["baselines"]["uniform"]["forward_kl"] > d["baselines"]["unigram"]["forward_kl"] > 0
  assert len(d["teacher_logprob_by_position"]) == 4
  assert (d["gamma"], d["samples_per_prompt"], d["num_prompts"]) == (1.0, 16, 24)
  json.dumps(out, allow_nan=False)


def test_another_teacher_as_the_model_gets_the_exact_kls_in_expectation(monkeypatch):
  task, prompts, out = analyse_with(OTHER, monkeypatch, k=64)
  p, q = task.teacher, kd.Teacher(OTHER)
  forward, reverse = np.zeros(2), np.zeros(2)
  for prompt in prompts:
    forward += kd.markov_kl(p.transition_log_probs(prompt), q.transition_log_probs(prompt),
                            int(prompt[-1]))
    reverse += kd.markov_kl(q.transition_log_probs(prompt), p.transition_log_probs(prompt),
                            int(prompt[-1]))
  assert forward[0] / forward[1] > 0.05
  assert out["forward_kl"] == pytest.approx(forward[0] / forward[1], rel=0.1)
  assert out["reverse_kl"] == pytest.approx(reverse[0] / reverse[1], rel=0.1)
  d = out["known_distribution"]
  assert d["logprob_teacher_spearman"] < 1.0
  assert out["reward_teacher_spearman"] == d["logprob_teacher_spearman"]


def test_reward_and_log_pi_rank_alike_only_at_gamma_one():
  from irl_lm.models import t5  # pylint: disable=g-import-not-at-top
  model = t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=8, emb_dim=32,
                                                  num_heads=2, head_dim=16, mlp_dim=64,
                                                  activation_dtype=jnp.float32))
  params = model.init(jax.random.PRNGKey(0), model.input_shapes(
      6, {"inputs": 3, "targets": 5}))
  prompts = jnp.tile(jnp.array([[2, 3, 1]], jnp.int32), (6, 1))  # one prompt, 6 outputs
  tokens = jnp.array(np.random.default_rng(0).integers(2, 8, (6, 5)), jnp.int32)
  tokens = tokens.at[:, 3].set(1).at[:3, 1].set(1)  # EOS after 2 or 4 tokens
  tokens = jnp.where(jnp.cumsum(tokens == 1, axis=1) - (tokens == 1) > 0, 0, tokens)
  one = kde.teacher_forced(model, params, prompts, tokens, gamma=1.0)
  shift = np.asarray(one["reward"] - one["log_prob"])
  np.testing.assert_allclose(shift, shift[0], rtol=1e-5)  # V(s_0), the same for every output
  half = kde.teacher_forced(model, params, prompts, tokens, gamma=0.5)
  assert np.ptp(np.asarray(half["reward"] - half["log_prob"])) > 1e-3
  assert one["log_probs"].shape == (6, 5, 8)
  np.testing.assert_allclose(np.exp(np.asarray(one["log_probs"])).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_train_and_evaluate_report_the_exact_metrics(tmp_path):
  run_dir = tmp_path / "run"
  bindings = [f"run.run_dir = '{run_dir}'", "TrainSettings.num_train_steps = 20",
              "EvalSettings.examples = 8", "EvalSettings.batch_size = 8",
              "CheckpointSettings.every = 20", "make_schedule.warmup_steps = 5",
              "known_distribution_task.sizes = {'train': 200, 'validation': 8, 'test': 8}"]
  env = {**os.environ, "PYTHONPATH": REPO}
  for extra in ([], ["run.mode = 'evaluate'", "evaluate.num_examples = 8"]):
    args = [sys.executable, "-m", "irl_lm.main", "--gin_file=gin/known_distribution_tiny.gin"]
    args += [f"--gin_bindings={b}" for b in bindings + extra]
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
  summaries = [run_dir / "eval_validation_greedy_summary.json"]
  summaries += list((run_dir / "eval").glob("*/greedy_summary.json"))
  assert len(summaries) == 2
  for path in summaries:
    summary = json.loads(path.read_text())
    for key in kde.TOP_LEVEL_KEYS:
      assert key in summary
    d = summary["known_distribution"]
    assert summary["forward_kl"] > 0 and d["num_prompts"] == 8 and d["gamma"] == 1.0
    assert len(d["teacher_logprob_by_position"]) == 24
    assert d["baselines"]["unigram"]["forward_kl"] > 0
