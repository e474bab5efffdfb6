"""Token ids as a vocabulary defines them: id 0 is padding only where it is not a token (T5,
seqio), an ordinary token where it is (Qwen2 / Llama 3's '!'); online samples' teacher-forcing
features agree with the sampler's lengths and log-probs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm.decoding import search
from irl_lm.evaluation import predict
from irl_lm.models import decoder_only, t5
from irl_lm.models.base import PROMPT_PAD_ID

VOCAB, L, T, B = 8, 4, 8, 64
EOS = 1
SMALL = dict(vocab_size=VOCAB, activation_dtype=jnp.float32, emb_dim=32, num_heads=2,
             num_kv_heads=1, head_dim=16, mlp_dim=32, num_layers=1)


def _decoder_only(pad_is_token: bool):
  start = dict(start_id=None) if pad_is_token else {}
  return decoder_only.DecoderOnlyModel(decoder_only.decoder_only_config(
      "tiny", pad_is_token=pad_is_token, eos_id=EOS, **start, **SMALL))


def _t5():
  return t5.EncoderDecoderModel(t5.T5Config(
      vocab_size=VOCAB, emb_dim=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
      head_dim=16, mlp_dim=32, activation_dtype=jnp.float32))


MODELS = {"qwen2_style": lambda: _decoder_only(True), "seqio": lambda: _decoder_only(False),
          "t5": _t5}


def _prompts():
  """Prompts whose real tokens include id 0, the last row's ending with it."""
  rows = np.array([[5, 0, 3, PROMPT_PAD_ID], [4, 0, PROMPT_PAD_ID, PROMPT_PAD_ID]], np.int32)
  return np.tile(rows, (B // 2, 1))


def _params(model):
  shapes = model.input_shapes(1, {"inputs": L, "targets": T})
  return jax.jit(lambda rng: model.init(rng, shapes))(jax.random.key(0))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_samples_features_agree_with_their_lengths_and_log_probs(name):
  model = MODELS[name]()
  params, prompts = _params(model), _prompts()
  sample = jax.jit(functools.partial(search.temperature_sample, model, max_decode_length=T))
  out = jax.device_get(sample(params, prompts, jax.random.key(1)))
  emitted = np.arange(T)[None] < out.lengths[:, None]
  pad_inside = (out.tokens == 0) & emitted
  if model.pad_is_token:
    # id 0 is drawn like any other token and does not end a continuation.
    assert pad_inside.any() and (pad_inside & (np.arange(T)[None] < out.lengths[:, None] - 1)
                                 ).any()
  else:
    assert not pad_inside.any()
  batch = model.teacher_forcing_batch(prompts, out.tokens, out.lengths)
  weights = np.asarray(batch["decoder_loss_weights"])
  np.testing.assert_array_equal(weights.sum(1), out.lengths)
  np.testing.assert_array_equal(weights, emitted)
  logp = jax.nn.log_softmax(model.logits(params, batch), axis=-1)
  logp = np.take_along_axis(np.asarray(logp), np.asarray(batch["decoder_target_tokens"])[..., None],
                            axis=-1)[..., 0]
  np.testing.assert_allclose((logp * weights).sum(1), out.log_probs.sum(1), atol=1e-4)
  # A decoded row's text keeps its id-0 tokens (only EOS ends it).
  row = int(np.argmax(pad_inside.any(1))) if model.pad_is_token else 0
  assert predict.output_ids(out.tokens[row], model.eos_id) == [
      int(t) for t in out.tokens[row, :out.lengths[row]] if t != model.eos_id]


@pytest.mark.parametrize("name", ["qwen2_style", "seqio"])
def test_a_prompt_keeps_its_trailing_id_0_where_it_is_a_token(name):
  model = MODELS[name]()
  prompts = np.array([[5, 0, 3, PROMPT_PAD_ID], [4, 0, PROMPT_PAD_ID, PROMPT_PAD_ID],
                      [4, 0, 0, 0]], np.int32)
  batch = model.teacher_forcing_batch(prompts, np.full((3, T), 2, np.int32))
  if model.pad_is_token:  # 0 is '!': kept, and only PROMPT_PAD_ID pads
    np.testing.assert_array_equal(batch["prompt_mask"].sum(1), [3, 2, 4])
    np.testing.assert_array_equal(model.start_tokens(prompts), [3, 0, 0])
  else:  # 0 is padding: a trailing 0 is not part of the prompt
    np.testing.assert_array_equal(batch["prompt_mask"].sum(1), [3, 1, 1])
    np.testing.assert_array_equal(model.start_tokens(prompts), [3, 4, 4])
  np.testing.assert_array_equal(model.prompts(batch),
                                np.where(batch["prompt_mask"] > 0, prompts, PROMPT_PAD_ID))
  # Appending the trailing '!' changes the continuation's logits only where it is a token.
  params = _params(model)
  with_bang = model.teacher_forcing_batch(prompts[1:2, :3], np.full((1, T), 2, np.int32))
  without = model.teacher_forcing_batch(prompts[1:2, :1], np.full((1, T), 2, np.int32))
  differ = np.abs(model.logits(params, with_bang) - model.logits(params, without)).max() > 1e-3
  assert differ == model.pad_is_token


class _FavoursIdZero:
  """The model with id 0's decoding logit raised by 100: the most likely token everywhere."""

  def __init__(self, model):
    self.model = model

  def __getattr__(self, name):
    return getattr(self.model, name)

  def decode_step(self, *args):
    logits, state = self.model.decode_step(*args)
    return logits.at[:, 0].add(100.0), state


@pytest.mark.parametrize("name", sorted(MODELS))
def test_beam_search_and_greedy_never_emit_a_pad_id_that_is_not_a_token(name):
  model = MODELS[name]()
  params = _params(model)
  model = _FavoursIdZero(model)
  prompts = _prompts()[:2]
  greedy = search.temperature_sample(model, params, prompts, None, max_decode_length=T,
                                     temperature=0.0)
  beams = search.beam_search(model, params, prompts, beam_size=2, max_decode_length=T)
  emitted = np.arange(T)[None] < np.asarray(greedy.lengths)[:, None]
  if model.pad_is_token:
    assert ((np.asarray(greedy.tokens) == 0) & emitted).any()
  else:
    assert not ((np.asarray(greedy.tokens) == 0) & emitted).any()
    best = np.asarray(beams.tokens[:, 0])
    ends = [list(r).index(EOS) + 1 if EOS in r else T for r in best]
    assert all(0 not in list(r[:n]) for r, n in zip(best, ends))
