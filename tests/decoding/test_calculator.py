"""The GSM8k calculator: safe evaluation, call detection, and forcing results while decoding."""
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm import decoding
from irl_lm.data import vocabularies
from irl_lm.data import calculator
from irl_lm.decoding import calculator as calculator_decode


@pytest.mark.parametrize("expression,expected", [
    ("48/2", "24"),
    ("1,200*0.15", "180"),            # thousands comma and a decimal
    ("1,000,000 / 4", "250000"),
    ("(3 + 4) × 2", "14"),            # unicode times, spaces, parentheses
    ("10 − 3 − 2", "5"),              # unicode minus, left-associative
    ("8/2/2", "2"),
    ("2 + 3 * 4", "14"),              # precedence
    ("-(2+3)*4", "-20"),
    ("2*-3", "-6"),
    ("7 ÷ 2", "3.5"),
    (".5*8", "4"),
    ("12/60", "0.2"),
    ("0.1+0.2", "0.3"),               # exact arithmetic, no float error
    ("100/3", "33.333333"),           # rounded to 6 decimals
    ("2/3", "0.666667"),              # half-up
    ("5-5.0", "0"),
    ("((((1))))", "1"),
])
def test_evaluates_tricky_expressions(expression, expected):
  assert calculator.calculate(expression) == expected


@pytest.mark.parametrize("expression", [
    "5/0", "5/(2-2)", "1/0.0",        # division by zero: no forcing
    "2**3", "2^3", "3%", "abs(2)", "__import__('os')", "1e5", "x+1",
    "1,00+1", "1,0000", "1.2.3",      # malformed numbers
    "((2)", "2)", "2+", "", "   ",
    "9" * 31,                          # too many digits
    "(" * 40 + "1" + ")" * 40,         # nested too deeply
    "1+" * 200 + "1",                  # too long
])
def test_refuses_what_it_cannot_evaluate(expression):
  assert calculator.evaluate_expression(expression) is None
  assert calculator.calculate(expression) is None


def test_format_number():
  assert calculator.format_number(Fraction(-7, 2)) == "-3.5"
  assert calculator.format_number(Fraction(19999999, 10000000)) == "2"
  assert calculator.format_number(Fraction(-1, 10 ** 9)) == "0"
  assert calculator.format_number(12) == "12"


def test_find_call():
  call = calculator.find_call("Sold 48/2 = <<48/2", "Sold 48/2 = <<48/2=")
  assert (call.expression, call.result, call.forced_text) == ("48/2", "24", "=24>>")
  # A token carrying the '=' and more: the model's result is replaced.
  call = calculator.find_call("Sold <<48/2", "Sold <<48/2=25")
  assert call.forced_text == "=24>>"
  # The whole annotation opening in one token.
  assert calculator.find_call("x ", "x <<3*4=").forced_text == "<<3*4=12>>"
  assert calculator.find_call("a <<1+1=2>>2", "a <<1+1=2>>2 =") is None  # closed already
  assert calculator.find_call("a <<1+1=", "a <<1+1=2") is None  # '=' seen before: once only
  assert calculator.find_call("a <<2/0", "a <<2/0=") is None  # cannot evaluate: no forcing
  assert calculator.find_call("a 2+2", "a 2+2=") is None  # no annotation
  assert calculator.find_call("abc", "xbc=") is None  # text does not extend the previous


class ToyVocabulary:
  """Whole-piece vocabulary: greedy longest-match encoding, decoding is concatenation."""

  def __init__(self, pieces):
    self.pieces = ["<pad>", "</s>", "<unk>"] + list(pieces)

  def encode(self, text):
    ids, i = [], 0
    while i < len(text):
      match = max((p for p in self.pieces[3:] if text.startswith(p, i)), key=len)
      ids.append(self.pieces.index(match))
      i += len(match)
    return ids

  def decode(self, ids):
    out = []
    for i in ids:
      if i == 1:
        break
      if i > 2:
        out.append(self.pieces[i])
    return "".join(out)


class ScriptedModel:
  """Proposes script[b, position] at every position, whatever it is fed (a decodable model)."""

  eos_id = 1

  def __init__(self, script_BT, vocab_size):
    self.script = jnp.asarray(script_BT, jnp.int32)
    self.vocab_size = vocab_size

  def start_tokens(self, prompts):
    return jnp.zeros((prompts.shape[0],), jnp.int32)

  def init_decode_state(self, params, encoder_input_tokens, max_decode_length):
    del params, max_decode_length
    return {"script": self.script[:encoder_input_tokens.shape[0]]}

  def decode_step(self, params, state, tokens, position):
    del params, tokens
    nxt = jax.lax.dynamic_index_in_dim(state["script"], position, axis=1, keepdims=False)
    return 10.0 * jax.nn.one_hot(nxt, self.vocab_size), state


TOY = ToyVocabulary(["So ", "<<", ">>", "=8", "=", "+", "/", "*", "0", "2", "3", "4", "5", "6",
                     "7", "8", " apples", "no calc", " ", "30"])


def _script(texts, length):
  out = np.zeros((len(texts), length), np.int32)
  for row, text in enumerate(texts):
    ids = TOY.encode(text) + [1]
    out[row, :len(ids)] = ids
  return out


def test_calculator_decoding_forces_results_per_row():
  T = 16
  texts = ["So <<3+4=8>>8 apples",   # wrong result: '=8' is one token, replaced by '=', '7', '>>'
           "no calc 5",               # untouched
           "So <<2/0=8>>8",          # cannot evaluate: untouched
           "So <<5*6=30>>30"]         # right result: forcing writes what the model would
  script = _script(texts, T)
  model = ScriptedModel(script, len(TOY.pieces))
  enc = jnp.ones((4, 3), jnp.int32)
  out = calculator_decode.calculator_sample(model, None, enc, jax.random.PRNGKey(0),
                                            vocabulary=TOY, max_decode_length=T, temperature=0.0)
  decoded = [TOY.decode(row) for row in out.tokens]
  # Row 0: the forced '=', '7', '>>' take 3 positions where the script had 2 ('=8', '>>'), so
  # the model's own tokens resume one script position later (' apples', skipping '8').
  assert decoded == ["So <<3+4=7>> apples", "no calc 5", "So <<2/0=8>>8", "So <<5*6=30>>30"]
  assert out.num_calls.tolist() == [1, 0, 0, 1]
  forced_ids = [TOY.pieces[t] for t, f in zip(out.tokens[0], out.forced[0]) if f]
  assert forced_ids == ["=", "7", ">>"]
  assert not out.forced[1].any() and not out.forced[2].any()
  np.testing.assert_array_equal(out.lengths, [np.flatnonzero(r == 1)[0] + 1 for r in out.tokens])
  # Rows without a call equal plain greedy decoding.
  plain = decoding.temperature_sample(model, None, enc, jax.random.PRNGKey(0),
                                      max_decode_length=T, temperature=0.0)
  np.testing.assert_array_equal(out.tokens[1:3], np.asarray(plain.tokens)[1:3])
  np.testing.assert_array_equal(np.asarray(plain.tokens)[0], script[0])


def test_calculator_decoding_with_sentencepiece_dummy_prefix():
  """The stdlib model adds a dummy-prefix space when encoding a piece alone; forcing must not."""
  vocab = vocabularies.stdlib_vocabulary()
  prefix = "Natalia sold 48/2 = <<48/2"
  ids = vocab.encode(prefix)
  assert vocab.decode(vocab.encode("=24>>")) == "=24>>"
  assert vocab.decode(ids + vocab.encode("=24>>")) != prefix + "=24>>"  # the naive way fails
  forced = calculator_decode.continuation_ids(vocab, ids, vocab.decode(ids), "=24>>")
  assert vocab.decode(ids + forced) == prefix + "=24>>"

  text = "Natalia sold 48/2 = <<48/2=25>>25 clips."
  script = np.zeros((1, 40), np.int32)
  script_ids = vocab.encode(text) + [1]
  script[0, :len(script_ids)] = script_ids
  model = ScriptedModel(script, vocab.vocab_size)
  out = calculator_decode.calculator_sample(model, None, jnp.ones((1, 2), jnp.int32),
                                            jax.random.PRNGKey(0), vocabulary=vocab,
                                            max_decode_length=40)
  assert vocab.decode(out.tokens[0].tolist()).startswith("Natalia sold 48/2 = <<48/2=24>>")
  assert out.num_calls.tolist() == [1]
