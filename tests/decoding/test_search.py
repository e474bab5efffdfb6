"""Tests for irl_lm/decoding.py with hand-built table "models" (exact references in numpy).

The main test model is an order-2 Markov table: the logits at position t are
`table[t, y_{t-2}, y_{t-1}] + bias(encoder tokens)`, where y_{t-1} is the token fed at t and
y_{t-2} is kept in the decode state (so a wrongly gathered state changes the results).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from irl_lm import decoding

EOS = 1


class MarkovTableModel:
  """Implements the decode interface: logits = table[pos, prev, last] + sum_l enc_emb[enc_l]."""

  eos_id = EOS

  def start_tokens(self, prompts: jax.Array) -> jax.Array:
    return jnp.zeros((prompts.shape[0],), jnp.int32)

  def init_decode_state(self, params: dict, encoder_input_tokens: jax.Array,
                        max_decode_length: int) -> dict:
    batch = encoder_input_tokens.shape[0]
    return {
        "prev": jnp.zeros((batch,), jnp.int32),
        "bias": params["enc_emb"][encoder_input_tokens].sum(axis=1),
        "fed": jnp.zeros((batch, max_decode_length), jnp.int32),  # stands in for a KV cache
    }

  def decode_step(self, params: dict, state: dict, tokens: jax.Array,
                  position: jax.Array) -> tuple[jax.Array, dict]:
    logits = params["table"][position, state["prev"], tokens] + state["bias"]
    fed = jnp.where(jnp.arange(state["fed"].shape[1]) == position, tokens[:, None], state["fed"])
    return logits.astype(jnp.float32), {"prev": tokens, "bias": state["bias"], "fed": fed}


MODEL = MarkovTableModel()


def make_params(table: np.ndarray, enc_vocab: int = 7, bias_scale: float = 0.0,
                seed: int = 0) -> dict:
  """table [T, V, V, V] -> params; enc_emb [enc_vocab, V] random * bias_scale."""
  rng = np.random.default_rng(seed)
  vocab = table.shape[-1]
  enc_emb = bias_scale * rng.normal(size=(enc_vocab, vocab))
  return {"table": jnp.asarray(table, jnp.float32), "enc_emb": jnp.asarray(enc_emb, jnp.float32)}


def random_table(T: int, V: int, scale: float = 2.0, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(T, V, V, V)) * scale


def np_logits(params: dict, enc_row: np.ndarray, prefix: list[int]) -> np.ndarray:
  """Reference next-token logits [V] (float64) for one row after `prefix`."""
  table = np.asarray(params["table"], np.float64)
  bias = np.asarray(params["enc_emb"], np.float64)[enc_row].sum(axis=0)
  t = len(prefix)
  last = prefix[-1] if t >= 1 else 0
  prev = prefix[-2] if t >= 2 else 0
  return table[t, prev, last] + bias


def np_log_softmax(z: np.ndarray) -> np.ndarray:
  z = z - z.max()
  return z - np.log(np.exp(z).sum())


def np_softmax(z: np.ndarray) -> np.ndarray:
  return np.exp(np_log_softmax(np.asarray(z, np.float64)))


def np_greedy(params: dict, enc_row: np.ndarray, T: int) -> list[int]:
  out: list[int] = []
  while len(out) < T:
    out.append(int(np.argmax(np_logits(params, enc_row, out))))
    if out[-1] == EOS:
      break
  return out


def np_length_penalty(length: int, alpha: float) -> float:
  return ((5.0 + length) / 6.0) ** alpha


def np_all_hypotheses(params: dict, enc_row: np.ndarray, T: int,
                      alpha: float) -> list[tuple[float, list[int]]]:
  """Every complete sequence (ends in EOS, or reaches T) with its length-penalised score."""
  out = []

  def rec(prefix: list[int], logp: float) -> None:
    lp = np_log_softmax(np_logits(params, enc_row, prefix))
    for tok in range(lp.shape[0]):
      seq, total = prefix + [tok], logp + lp[tok]
      if tok == EOS or len(seq) == T:
        out.append((total / np_length_penalty(len(seq), alpha), seq))
      else:
        rec(seq, total)

  rec([], 0.0)
  return sorted(out, key=lambda x: -x[0])


def pad(seq: list[int], T: int) -> list[int]:
  return list(seq) + [0] * (T - len(seq))


def jitted_sample(**static: Any):
  fn = functools.partial(decoding.temperature_sample, MODEL, **static)
  return jax.jit(fn, static_argnames=("max_decode_length", "top_k", "eos_id"))


def jitted_beam(**static: Any):
  fn = functools.partial(decoding.beam_search, MODEL, **static)
  return jax.jit(fn, static_argnames=("beam_size", "max_decode_length", "eos_id"))


def encoder_tokens(batch: int, length: int = 3, vocab: int = 7, seed: int = 1) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, size=(batch, length)),
                     jnp.int32)


# ----------------------------------------------------------------------------------------------
# Greedy and temperature -> 0.


def test_greedy_equals_argmax_along_own_output():
  T, V, B = 6, 6, 8
  params = make_params(random_table(T, V, seed=3), bias_scale=0.7)
  enc = encoder_tokens(B)
  out = jitted_sample(max_decode_length=T, temperature=0.0)(params, enc, jax.random.key(0))
  tokens, logp, lengths = map(np.asarray, out)
  assert tokens.shape == (B, T) and tokens.dtype == np.int32
  assert logp.shape == (B, T) and logp.dtype == np.float32
  enc_np = np.asarray(enc)
  saw_eos = saw_full = False
  for b in range(B):
    ref = np_greedy(params, enc_np[b], T)
    np.testing.assert_array_equal(tokens[b], pad(ref, T))
    assert lengths[b] == len(ref)
    saw_eos |= ref[-1] == EOS
    saw_full |= len(ref) == T and ref[-1] != EOS
    # log_probs: unmodified log-softmax of the model at the emitted tokens, 0 after the end.
    ref_lp = [np_log_softmax(np_logits(params, enc_np[b], ref[:t]))[ref[t]]
              for t in range(len(ref))]
    np.testing.assert_allclose(logp[b], pad(ref_lp, T), rtol=1e-5, atol=1e-5)
  assert saw_eos and saw_full, "test model should cover both EOS-stopped and full-length rows"


def test_low_temperature_equals_greedy():
  T, V, B = 6, 6, 16
  params = make_params(random_table(T, V, scale=3.0, seed=4), bias_scale=0.7)
  enc = encoder_tokens(B, seed=2)
  rng = jax.random.key(7)
  greedy = jitted_sample(max_decode_length=T, temperature=0.0)(params, enc, rng)
  cold = jitted_sample(max_decode_length=T, temperature=1e-6)(params, enc, rng)
  # Traced temperature (one compiled function for every temperature), exactly 0 and 1e-6.
  traced = jitted_sample(max_decode_length=T)
  traced_zero = traced(params, enc, rng, temperature=jnp.float32(0.0))
  traced_cold = traced(params, enc, rng, temperature=jnp.float32(1e-6))
  traced_hot = traced(params, enc, rng, temperature=jnp.float32(1.0))
  for other in (cold, traced_zero, traced_cold):
    np.testing.assert_array_equal(other.tokens, greedy.tokens)
    np.testing.assert_array_equal(other.lengths, greedy.lengths)
    np.testing.assert_allclose(other.log_probs, greedy.log_probs, rtol=1e-6)
  assert np.all(np.isfinite(np.asarray(greedy.log_probs)))
  # ...while temperature 1 really samples.
  assert not np.array_equal(np.asarray(traced_hot.tokens), np.asarray(greedy.tokens))


# ----------------------------------------------------------------------------------------------
# Exact statistics with a fixed seed. Significance: each test fails when p <= 0.001.

N_SAMPLES = 4000
P_MIN = 1e-3
# First-step logits of the hand-set model (V = 8; token 1 = EOS).
Z0 = np.array([-1.0, 0.2, 1.5, 0.9, 0.0, -0.5, 2.0, 0.6])


def first_step_params(T: int = 1) -> dict:
  V = Z0.shape[0]
  table = np.zeros((T, V, V, V))
  table[0, 0, 0] = Z0
  return make_params(table)


def chisquare_p(counts: np.ndarray, probs: np.ndarray) -> float:
  keep = probs > 0
  assert counts[~keep].sum() == 0, f"emitted a token of probability 0: {counts}"
  expected = probs[keep] / probs[keep].sum() * counts.sum()
  return scipy.stats.chisquare(counts[keep], expected).pvalue


def expected_first_step(temperature: float, top_k: int, top_p: float) -> np.ndarray:
  z = Z0 / temperature
  order = np.argsort(-z)
  keep = np.zeros_like(z, bool)
  keep[order[:top_k] if top_k else order] = True
  p = np_softmax(np.where(keep, z, -np.inf))
  ps = p[order]
  mass_before = np.cumsum(ps) - ps
  nucleus = np.zeros_like(keep)
  nucleus[order[(mass_before < top_p) & keep[order]]] = True
  nucleus[order[0]] = True
  return np.where(nucleus, p, 0.0) / np.where(nucleus, p, 0.0).sum()


@pytest.mark.parametrize("top_k", [0, 3])
def test_first_step_frequencies_match_filtered_softmax(top_k):
  params = first_step_params()
  enc = jnp.zeros((N_SAMPLES, 2), jnp.int32)
  sample = jitted_sample(max_decode_length=1, top_k=top_k)
  # (temperature, top_p); temperature and top_p are traced: one compile per top_k.
  for seed, (temperature, top_p) in enumerate([(1.0, 1.0), (0.5, 1.0), (1.5, 0.8)]):
    out = sample(params, enc, jax.random.key(100 + seed), temperature=jnp.float32(temperature),
                 top_p=jnp.float32(top_p))
    counts = np.bincount(np.asarray(out.tokens)[:, 0], minlength=Z0.shape[0])
    probs = expected_first_step(temperature, top_k, top_p)
    if top_k or top_p < 1:
      assert np.count_nonzero(probs) < Z0.shape[0]  # the filter really removes tokens
    p = chisquare_p(counts, probs)
    assert p > P_MIN, (temperature, top_k, top_p, counts, probs * N_SAMPLES, p)
    # The reported log-prob is the unmodified policy's, whatever the filtering.
    np.testing.assert_allclose(np.asarray(out.log_probs)[:, 0],
                               np_log_softmax(Z0)[np.asarray(out.tokens)[:, 0]], rtol=1e-5)


def test_chisquare_detects_wrong_distribution():
  """Power check: the same draws are clearly rejected against the wrong temperature."""
  params = first_step_params()
  enc = jnp.zeros((N_SAMPLES, 2), jnp.int32)
  out = jitted_sample(max_decode_length=1)(params, enc, jax.random.key(100))
  counts = np.bincount(np.asarray(out.tokens)[:, 0], minlength=Z0.shape[0])
  assert chisquare_p(counts, np_softmax(Z0 / 1.3)) < 1e-6


def test_two_step_joint_frequencies_match_model():
  """Pairs (y0, y1) at temperature 1 follow p(y0) p(y1 | y0) (state and per-step keys)."""
  T, V = 2, 4
  table = random_table(T, V, scale=1.0, seed=11)
  table[0, 0, 0, EOS] = -30.0  # no early EOS at the first step: every row has two tokens
  params = make_params(table)
  enc = jnp.zeros((N_SAMPLES, 2), jnp.int32)
  out = jitted_sample(max_decode_length=T)(params, enc, jax.random.key(5))
  tokens = np.asarray(out.tokens)
  assert np.all(np.asarray(out.lengths) == 2)
  counts = np.bincount(tokens[:, 0] * V + tokens[:, 1], minlength=V * V)
  p0 = np_softmax(table[0, 0, 0])
  joint = np.stack([p0[a] * np_softmax(table[1, 0, a]) for a in range(V)]).reshape(-1)
  p = chisquare_p(counts, joint)
  assert p > P_MIN, (counts, joint * N_SAMPLES, p)


# ----------------------------------------------------------------------------------------------
# Filtering never leaves the allowed set; log-probs; EOS and lengths.


@pytest.mark.parametrize("top_k,top_p,temperature", [(3, 1.0, 1.0), (0, 0.5, 1.3), (2, 0.7, 2.0)])
def test_top_k_top_p_stay_in_allowed_set(top_k, top_p, temperature):
  T, V, B = 5, 8, 256
  params = make_params(random_table(T, V, scale=1.5, seed=21), bias_scale=0.5)
  enc = encoder_tokens(B, seed=3)
  out = jitted_sample(max_decode_length=T, top_k=top_k, top_p=top_p, temperature=temperature)(
      params, enc, jax.random.key(9))
  tokens, logp, lengths = map(np.asarray, (out.tokens, out.log_probs, out.lengths))
  enc_np = np.asarray(enc)
  checked = 0
  for b in range(B):
    seq = tokens[b, :lengths[b]].tolist()
    assert np.all(tokens[b, lengths[b]:] == 0) and np.all(logp[b, lengths[b]:] == 0)
    assert EOS not in seq[:-1]
    assert lengths[b] == T or seq[-1] == EOS
    for t, tok in enumerate(seq):
      z = np_logits(params, enc_np[b], seq[:t])
      zt = z / temperature
      order = np.argsort(-zt)
      allowed = order[:top_k] if top_k else order
      p = np_softmax(zt[allowed])
      nucleus = allowed[(np.cumsum(p) - p) < top_p]
      assert tok in set(nucleus.tolist()), (b, t, tok, nucleus)
      np.testing.assert_allclose(logp[b, t], np_log_softmax(z)[tok], rtol=1e-4, atol=1e-5)
      checked += 1
  assert checked > B  # some rows really have several tokens


def eos_at_params(T: int, V: int, enc_vocab: int) -> dict:
  """Table for `EosAtModel`: token 2 is (almost surely) chosen wherever EOS is not forced."""
  table = np.full((T, V, V, V), -4.0)
  table[..., 2] = 12.0
  return make_params(table, enc_vocab=enc_vocab)


class EosAtModel(MarkovTableModel):
  """Emits EOS (with overwhelming probability) at position `enc[:, 0]`, else token 2."""

  def decode_step(self, params, state, tokens, position):
    logits, new_state = super().decode_step(params, state, tokens, position)
    eos_here = state["eos_at"] == position
    logits = logits.at[:, EOS].add(jnp.where(eos_here, 50.0, 0.0))
    new_state["eos_at"] = state["eos_at"]
    return logits, new_state

  def init_decode_state(self, params, encoder_input_tokens, max_decode_length):
    state = super().init_decode_state(params, encoder_input_tokens, max_decode_length)
    state["eos_at"] = encoder_input_tokens[:, 0]
    return state


def test_eos_stopping_lengths_and_decode_lengths():
  T, V = 6, 5
  model = EosAtModel()
  params = eos_at_params(T, V, enc_vocab=T + 2)
  # EOS at positions 0, 2, 5, never (7); decode_lengths cut some rows.
  enc = jnp.asarray([[0, 0], [2, 0], [5, 0], [7, 0], [7, 0], [5, 0], [2, 0]], jnp.int32)
  limits = jnp.asarray([6, 6, 6, 6, 3, 0, 1], jnp.int32)
  fn = jax.jit(functools.partial(decoding.temperature_sample, model),
               static_argnames=("max_decode_length", "top_k", "eos_id"))
  for temperature in (0.0, 1.0):
    out = fn(params, enc, jax.random.key(0), max_decode_length=T, temperature=temperature,
             decode_lengths=limits)
    expected = [
        [1, 0, 0, 0, 0, 0],
        [2, 2, 1, 0, 0, 0],
        [2, 2, 2, 2, 2, 1],
        [2, 2, 2, 2, 2, 2],
        [2, 2, 2, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [2, 0, 0, 0, 0, 0],
    ]
    np.testing.assert_array_equal(out.tokens, expected)
    np.testing.assert_array_equal(out.lengths, [1, 3, 6, 6, 3, 0, 1])
    logp = np.asarray(out.log_probs)
    after_end = np.arange(T)[None, :] >= np.asarray([1, 3, 6, 6, 3, 0, 1])[:, None]
    assert np.all(logp[after_end] == 0)
    assert np.all(logp <= 0) and np.all(logp > -1e-3)  # each token had probability ~1


class CountingModel(MarkovTableModel):
  """Counts executed decode steps through a host callback."""

  def __init__(self):
    self.calls = 0

  def _count(self, position):
    self.calls += 1

  def decode_step(self, params, state, tokens, position):
    jax.debug.callback(self._count, position)
    return super().decode_step(params, state, tokens, position)


def test_loop_ends_when_every_sequence_is_done():
  T, V = 10, 5
  table = np.zeros((T, V, V, V))
  table[:2, ..., EOS] = -60.0
  table[2, ..., EOS] = 60.0  # every row ends at position 2 (length 3)
  params = make_params(table)
  model = CountingModel()
  out = jax.jit(functools.partial(decoding.temperature_sample, model, max_decode_length=T))(
      params, encoder_tokens(4), jax.random.key(0))
  jax.block_until_ready(out)
  np.testing.assert_array_equal(out.lengths, [3, 3, 3, 3])
  assert model.calls == 3

  model.calls = 0
  beams = jax.jit(functools.partial(decoding.beam_search, model, beam_size=2,
                                    max_decode_length=T))(params, encoder_tokens(4))
  jax.block_until_ready(beams)
  # After step 2 two hypotheses finished and every alive beam is far worse: stop early.
  assert model.calls < T, model.calls


def test_invalid_arguments():
  params = first_step_params()
  enc = jnp.zeros((2, 2), jnp.int32)
  with pytest.raises(ValueError):
    decoding.temperature_sample(MODEL, params, enc, jax.random.key(0), max_decode_length=1,
                                top_k=-1)
  with pytest.raises(ValueError):
    decoding.temperature_sample(MODEL, params, enc, jax.random.key(0), max_decode_length=1,
                                top_p=0.0)
  with pytest.raises(ValueError):
    decoding.beam_search(MODEL, params, enc, beam_size=0, max_decode_length=1)


# ----------------------------------------------------------------------------------------------
# Beam search.


def greedy_trap_params() -> dict:
  """Greedy takes 'a' (p=.55) but every continuation of 'a' is unlikely; 'b' EOS is best."""
  T, V = 4, 6
  a, b, c, d = 2, 3, 4, 5
  probs = np.full((T, V, V, V), 1.0 / V)  # default: uniform over the vocabulary

  def set_dist(pos, prev, last, dist):
    p = np.full(V, 1e-4)
    for tok, pr in dist.items():
      p[tok] = pr
    probs[pos, prev, last] = p / p.sum()

  set_dist(0, 0, 0, {a: 0.55, b: 0.45})
  set_dist(1, 0, a, {c: 0.3, d: 0.25, a: 0.23, b: 0.2})
  set_dist(1, 0, b, {EOS: 0.95, c: 0.05})
  for x in (a, b, c, d):
    set_dist(2, a, x, {EOS: 0.99, c: 0.01})
  return make_params(np.log(probs))


def test_beam_search_beats_greedy_on_trap_model():
  T, B = 4, 2
  params = greedy_trap_params()
  enc = jnp.zeros((B, 1), jnp.int32)
  greedy = jitted_sample(max_decode_length=T, temperature=0.0)(params, enc, jax.random.key(0))
  np.testing.assert_array_equal(greedy.tokens, [[2, 4, 1, 0]] * B)  # a c EOS
  beams = jitted_beam(beam_size=2, max_decode_length=T)(params, enc)
  assert beams.tokens.shape == (B, 2, T) and beams.scores.shape == (B, 2)
  np.testing.assert_array_equal(beams.tokens[:, 0], [[3, 1, 0, 0]] * B)  # b EOS
  ref = np_all_hypotheses(params, np.zeros(1, int), T, alpha=0.6)
  np.testing.assert_allclose(beams.scores[:, 0], ref[0][0], rtol=1e-5)
  greedy_score = float(np.asarray(greedy.log_probs[0]).sum()) / np_length_penalty(3, 0.6)
  assert float(beams.scores[0, 0]) > greedy_score + 0.5
  # The greedy sequence is the runner-up, and the beams are sorted best first.
  np.testing.assert_array_equal(beams.tokens[:, 1], [[2, 4, 1, 0]] * B)
  np.testing.assert_allclose(beams.scores[:, 1], greedy_score, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.6, 0.0])
def test_exhaustive_beam_equals_brute_force(alpha):
  """With K >= the number of non-EOS prefixes the search is exhaustive: exact top-K."""
  T, V, B = 3, 5, 2
  K = (V - 1) ** (T - 1)
  params = make_params(random_table(T, V, scale=1.5, seed=31), bias_scale=0.5)
  enc = encoder_tokens(B, seed=4)
  out = jitted_beam(beam_size=K, max_decode_length=T, alpha=alpha)(params, enc)
  tokens, scores = np.asarray(out.tokens), np.asarray(out.scores)
  for b in range(B):
    ref = np_all_hypotheses(params, np.asarray(enc)[b], T, alpha)[:K]
    np.testing.assert_allclose(scores[b], [s for s, _ in ref], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(tokens[b], [pad(seq, T) for _, seq in ref])
    # The references cover EOS-ended and length-T hypotheses.
    assert any(seq[-1] == EOS for _, seq in ref) and any(len(seq) == T for _, seq in ref)


def test_small_beam_scores_consistent_and_sorted():
  T, V, B, K = 6, 7, 4, 3
  alpha = 0.6
  params = make_params(random_table(T, V, scale=1.5, seed=41), bias_scale=0.5)
  enc = encoder_tokens(B, seed=5)
  out = jitted_beam(beam_size=K, max_decode_length=T, alpha=alpha)(params, enc)
  tokens, scores = np.asarray(out.tokens), np.asarray(out.scores)
  assert np.all(np.diff(scores, axis=1) <= 0)
  greedy = jitted_sample(max_decode_length=T, temperature=0.0)(params, enc, jax.random.key(0))
  enc_np = np.asarray(enc)
  for b in range(B):
    seqs = set()
    for k in range(K):
      row = tokens[b, k].tolist()
      n = row.index(EOS) + 1 if EOS in row else T
      assert all(x == 0 for x in row[n:])
      seq = row[:n]
      seqs.add(tuple(seq))
      total = sum(np_log_softmax(np_logits(params, enc_np[b], seq[:t]))[seq[t]] for t in range(n))
      np.testing.assert_allclose(scores[b, k], total / np_length_penalty(n, alpha), rtol=1e-5)
    assert len(seqs) == K  # distinct hypotheses
    g = np.asarray(greedy.tokens)[b]
    gn = int(greedy.lengths[b])
    g_score = float(np.asarray(greedy.log_probs)[b].sum()) / np_length_penalty(gn, alpha)
    assert scores[b, 0] >= g_score - 1e-5 or tuple(g[:gn]) in seqs


# ----------------------------------------------------------------------------------------------
# Sharded over an 8-device mesh equals unsharded.


def test_sharded_equals_unsharded():
  assert jax.device_count() == 8
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
  T, V, B = 5, 6, 8
  params = make_params(random_table(T, V, scale=1.5, seed=51), bias_scale=0.5)
  enc = encoder_tokens(B, seed=6)
  rng = jax.random.key(3)
  p_sharded = {
      "table": jax.device_put(params["table"], NamedSharding(mesh, P(None, None, None, "model"))),
      "enc_emb": jax.device_put(params["enc_emb"], NamedSharding(mesh, P(None, "model"))),
  }
  enc_sharded = jax.device_put(enc, NamedSharding(mesh, P("data", None)))
  rng_repl = jax.device_put(rng, NamedSharding(mesh, P()))
  one = jax.devices()[0]
  p_single = jax.device_put(params, one)
  enc_single, rng_single = jax.device_put(enc, one), jax.device_put(rng, one)

  sample = jitted_sample(max_decode_length=T, top_k=4, top_p=0.9, temperature=1.0)
  greedy = jitted_sample(max_decode_length=T, temperature=0.0)
  beam = jitted_beam(beam_size=3, max_decode_length=T)
  for fn in (sample, greedy):
    a = fn(p_sharded, enc_sharded, rng_repl)
    b = fn(p_single, enc_single, rng_single)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    np.testing.assert_allclose(a.log_probs, b.log_probs, rtol=1e-6, atol=1e-6)
  a, b = beam(p_sharded, enc_sharded), beam(p_single, enc_single)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
  # And the sharded sample is a genuine sample: rows differ.
  assert len({tuple(r) for r in np.asarray(sample(p_sharded, enc_sharded, rng_repl).tokens)}) > 1


# ----------------------------------------------------------------------------------------------
# The real model (skipped until irl_lm/models/t5.py exists).


def _tiny_t5():
  t5 = pytest.importorskip("irl_lm.models.t5")
  config = t5.t5_1_1_config("tiny", vocab_size=128, activation_dtype=jnp.float32)
  return t5.EncoderDecoderModel(config)


def _t5_teacher_forced_log_probs(model, params, enc, tokens_BT: np.ndarray) -> np.ndarray:
  """log pi(y_t | y_<t, x) [B, T] of given outputs, from `model.logits` (teacher forcing)."""
  B = tokens_BT.shape[0]
  decoder_inputs = np.concatenate([np.zeros((B, 1), np.int32), tokens_BT[:, :-1]], axis=1)
  batch = {
      "encoder_input_tokens": enc,
      "decoder_input_tokens": jnp.asarray(decoder_inputs, jnp.int32),
      "decoder_target_tokens": jnp.asarray(tokens_BT, jnp.int32),
      "decoder_loss_weights": jnp.asarray(tokens_BT > 0, jnp.float32),
  }
  logits = model.logits(params, batch)
  return np.asarray(logits), np.asarray(jax.nn.log_softmax(logits, axis=-1))


T5_B, T5_L = 2, 7


@pytest.fixture(scope="module")
def tiny_t5():
  """(model, params, encoder tokens [2, 7] with padding on row 1) for a float32 tiny T5."""
  model = _tiny_t5()
  shapes = {"encoder_input_tokens": (T5_B, T5_L), "decoder_input_tokens": (T5_B, 8)}
  params = jax.jit(lambda rng: model.init(rng, shapes))(jax.random.key(0))
  enc = np.array(jax.random.randint(jax.random.key(1), (T5_B, T5_L), 2, 128, jnp.int32))
  enc[1, T5_L - 2:] = 0  # padded encoder input on one row
  return model, params, jnp.asarray(enc)


def test_t5_greedy_equals_teacher_forced_argmax(tiny_t5):
  model, params, enc = tiny_t5
  B, T = T5_B, 6
  out = jax.jit(functools.partial(decoding.temperature_sample, model, max_decode_length=T,
                                  temperature=0.0, eos_id=-1))(params, enc, jax.random.key(2))
  tokens = np.asarray(out.tokens)
  assert np.all(np.asarray(out.lengths) == T)  # eos_id=-1: never stops, all T positions
  logits, lsm = _t5_teacher_forced_log_probs(model, params, enc, tokens)
  np.testing.assert_array_equal(tokens, logits.argmax(-1))
  np.testing.assert_allclose(np.asarray(out.log_probs),
                             np.take_along_axis(lsm, tokens[..., None], -1)[..., 0],
                             rtol=1e-4, atol=1e-4)


def test_t5_beam_scores_match_teacher_forced_log_probs(tiny_t5):
  """Beam search over the real KV cache (tiled and gathered per step) scores consistently."""
  model, params, enc = tiny_t5
  B, T, K, alpha = T5_B, 5, 3, 0.6
  # An untrained model rarely emits EOS; call a frequent token "EOS" so that some beams end.
  first = jax.jit(functools.partial(decoding.temperature_sample, model, max_decode_length=1,
                                    temperature=0.0))(params, enc, jax.random.key(0))
  eos = int(np.asarray(first.tokens)[0, 0])
  out = jax.jit(functools.partial(decoding.beam_search, model, beam_size=K, max_decode_length=T,
                                  alpha=alpha, eos_id=eos))(params, enc)
  tokens, scores = np.asarray(out.tokens), np.asarray(out.scores)
  assert np.all(np.diff(scores, axis=1) <= 0)
  flat = tokens.reshape(B * K, T)
  enc_rep = jnp.repeat(enc, K, axis=0)
  _, lsm = _t5_teacher_forced_log_probs(model, params, enc_rep, flat)
  tok_lp = np.take_along_axis(lsm, flat[..., None], -1)[..., 0]
  lengths = np.array([list(r).index(eos) + 1 if eos in r else T for r in flat])
  ref = [tok_lp[i, :n].sum() / np_length_penalty(n, alpha) for i, n in enumerate(lengths)]
  np.testing.assert_allclose(scores.reshape(-1), ref, rtol=1e-4, atol=1e-4)
  assert np.any(lengths < T), "expected some hypotheses to end with EOS"


def test_t5_cached_decoding_equals_teacher_forcing_on_8_device_mesh():
  """Cached step-by-step logits equal the teacher-forced pass at every position (float32, 1e-5)
  with the parameters laid out by the Partitioner (wide axes over 'model') on a 4x2 mesh and the
  batch, hence the decode cache, over 'data'."""
  from irl_lm.partitioning import Partitioner
  assert jax.device_count() == 8
  model = _tiny_t5()
  V = model.config.vocab_size
  B, L, T = 8, 9, 7
  partitioner = Partitioner(mesh_shape=(4, 2))
  shapes = {"encoder_input_tokens": (B, L), "decoder_input_tokens": (B, T)}
  abstract = jax.eval_shape(lambda rng: model.init(rng, shapes), jax.random.key(0))
  param_shardings = partitioner.shardings_for(model.param_logical_axes(shapes), abstract)
  params = jax.jit(lambda rng: model.init(rng, shapes), out_shardings=param_shardings)(
      jax.random.key(0))
  # The layout really is sharded: vocab (128) and joined heads (4*32) split over 'model'.
  logits_kernel = params["decoder"]["logits_dense"]["kernel"]
  assert logits_kernel.sharding.spec == P(None, "model")
  assert logits_kernel.addressable_shards[0].data.shape == (128, V // 2)
  query = params["decoder"]["layers_0"]["self_attention"]["query"]["kernel"]
  assert query.addressable_shards[0].data.shape == (128, 64)

  k_enc, k_dec = jax.random.split(jax.random.key(7))
  enc = np.array(jax.random.randint(k_enc, (B, L), 2, V, jnp.int32))
  for row in range(B):
    enc[row, L - row % 4:] = 0  # different encoder padding per row
  targets = np.array(jax.random.randint(k_dec, (B, T), 2, V, jnp.int32))
  decoder_inputs = np.concatenate([np.zeros((B, 1), np.int32), targets[:, :-1]], axis=1)
  # Reference: unsharded, on one device, no mesh.
  host_params = jax.device_put(jax.device_get(params), jax.devices()[0])
  expected = np.asarray(jax.jit(model.logits)(host_params, {
      "encoder_input_tokens": enc, "decoder_input_tokens": decoder_inputs,
      "decoder_target_tokens": targets}))

  def decode_all(params, encoder_tokens, decoder_inputs):
    state = model.init_decode_state(params, encoder_tokens, T)
    out = jnp.zeros((B, T, V), jnp.float32)

    def body(position, carry):
      state, out = carry
      tokens = jax.lax.dynamic_index_in_dim(decoder_inputs, position, axis=1, keepdims=False)
      logits, state = model.decode_step(params, state, tokens, position)
      return state, out.at[:, position].set(logits)

    return jax.lax.fori_loop(0, T, body, (state, out))[1]

  batch = partitioner.batch_sharding()
  jitted = jax.jit(decode_all, in_shardings=(param_shardings, batch, batch), out_shardings=batch)
  enc_sharded = jax.device_put(enc, batch)
  dec_sharded = jax.device_put(decoder_inputs, batch)
  with partitioner.activate():
    # The model's logical constraints are live on the decode path (the rules are active).
    assert "sharding_constraint" in str(jax.make_jaxpr(decode_all)(params, enc, decoder_inputs))
    got = jitted(params, enc_sharded, dec_sharded)
  assert got.sharding.spec == P("data") and len(got.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
  assert np.abs(expected[:, 1:] - expected[:, :-1]).max() > 1e-2  # positions really differ

  # Greedy sampling through the sharded cache emits the argmax of the teacher-forced logits
  # along its own output.
  sample = jax.jit(functools.partial(decoding.temperature_sample, model, max_decode_length=T,
                                     temperature=0.0, eos_id=-1),
                   in_shardings=(param_shardings, batch, partitioner.replicated()))
  with partitioner.activate():
    out = sample(params, enc_sharded, jax.random.key(0))
  tokens = np.asarray(out.tokens)
  _, lsm = _t5_teacher_forced_log_probs(model, host_params, enc, tokens)
  np.testing.assert_array_equal(tokens, lsm.argmax(-1))


def test_nucleus_threshold_matches_sorted_definition():
  """The sort-free top-p threshold keeps exactly the sorted nucleus (mass before < top_p)."""
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(6, 3000)) * np.array([0.3, 1.0, 2.0, 4.0, 8.0, 30.0])[:, None]
  probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1))
  threshold = jax.jit(decoding.nucleus_threshold)
  sizes = []
  for top_p in (0.05, 0.3, 0.7, 0.9):
    tau = np.asarray(threshold(jnp.asarray(probs), jnp.float32(top_p)))
    for row in range(probs.shape[0]):
      p = probs[row].astype(np.float64)
      order = np.argsort(-p)
      before = np.cumsum(p[order]) - p[order]
      expected = set(order[before < top_p].tolist())
      assert set(np.flatnonzero(probs[row] >= tau[row]).tolist()) == expected, (top_p, row)
      sizes.append(len(expected))
  assert min(sizes) == 1 and max(sizes) > 1000  # from one token to most of the vocabulary
  # top_p = 1 keeps every token, even when the float32 total exceeds 1.
  np.testing.assert_array_equal(threshold(jnp.asarray(probs), jnp.float32(1.0)), 0.0)
