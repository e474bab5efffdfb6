"""GSM8k's calculator annotations: a safe arithmetic evaluator and the trigger that forces results.

GSM8k solutions annotate each computation as ``<<expr=result>>``, e.g.
``Natalia sold 48/2 = <<48/2=24>>24 clips in May.`` With the calculator on, when a model has
written ``<<expr=``, the decoder evaluates ``expr`` itself and forces ``result>>`` into the output
(:mod:`irl_lm.decoding.calculator`). This module holds the pure-Python parts:

* :func:`evaluate_expression` - a tiny recursive-descent parser (no ``eval``) for numbers,
  ``+ - * /`` (also ``− × ÷``) and parentheses, in exact rational arithmetic.
* :func:`format_number` - the canonical text of a result (``24``, ``0.2``, ``-3.5``); the built-in
  arithmetic task (:mod:`irl_lm.data.arithmetic`) writes its annotations with it, so forced results
  look exactly like the training targets.
* :func:`find_call` - whether a newly decoded piece of text has just completed ``<<expr=``, and
  the text to force.

Grammar (whitespace is ignored between tokens)::

  expr   := term (('+' | '-') term)*
  term   := factor (('*' | '/') factor)*
  factor := ('+' | '-') factor | number | '(' expr ')'
  number := digits with optional thousands commas (1,000 or 12,345,678) and an optional
            decimal part (2.5), or a bare decimal part (.5)

Anything else (letters, ``%``, ``**``, ``^``, a malformed number, unbalanced parentheses,
division by zero, overly long input) makes :func:`evaluate_expression` return ``None``: no result
is forced and decoding carries on with the model's own tokens.
"""
from __future__ import annotations

import dataclasses
import decimal
import fractions
import re
from typing import Optional

OPEN, CLOSE, EQUALS = "<<", ">>", "="
# Unicode operators that GSM8k-style text (or a model) may use.
_OPERATOR_ALIASES = {"−": "-", "–": "-", "×": "*", "÷": "/", "∗": "*"}
MAX_EXPRESSION_CHARS = 256
MAX_NUMBER_DIGITS = 30
MAX_DEPTH = 32
MAX_DECIMALS = 6

# One number token: thousands-grouped or plain digits with an optional fraction, or '.5'.
_NUMBER = re.compile(r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+")


class _ParseError(ValueError):
  """The expression is not in the calculator's grammar."""


def _tokenize(expression: str) -> list[str]:
  """Splits an expression into number and operator tokens.

  Raises:
    _ParseError: on any character outside the grammar or a malformed number.
  """
  tokens, i = [], 0
  text = "".join(_OPERATOR_ALIASES.get(ch, ch) for ch in expression)
  while i < len(text):
    ch = text[i]
    if ch.isspace():
      i += 1
    elif ch in "+-*/()":
      tokens.append(ch)
      i += 1
    else:
      match = _NUMBER.match(text, i)
      if not match:
        raise _ParseError(f"unexpected {ch!r}")
      end = match.end()
      # A number glued to more digits, a comma or a dot is malformed ("1,00", "1.2.3", "1,0000").
      if end < len(text) and (text[end].isdigit() or text[end] in ",."):
        raise _ParseError(f"malformed number at {i}")
      tokens.append(match.group(0))
      i = end
  return tokens


class _Parser:
  """Recursive descent over the tokens of :func:`_tokenize`, in exact rationals."""

  def __init__(self, tokens: list[str]):
    self.tokens = tokens
    self.pos = 0
    self.depth = 0

  def _peek(self) -> Optional[str]:
    return self.tokens[self.pos] if self.pos < len(self.tokens) else None

  def _take(self) -> str:
    token = self._peek()
    if token is None:
      raise _ParseError("unexpected end")
    self.pos += 1
    return token

  def parse(self) -> fractions.Fraction:
    value = self._expr()
    if self._peek() is not None:
      raise _ParseError(f"trailing {self._peek()!r}")
    return value

  def _expr(self) -> fractions.Fraction:
    value = self._term()
    while self._peek() in ("+", "-"):
      op = self._take()
      rhs = self._term()
      value = value + rhs if op == "+" else value - rhs
    return value

  def _term(self) -> fractions.Fraction:
    value = self._factor()
    while self._peek() in ("*", "/"):
      op = self._take()
      rhs = self._factor()
      if op == "*":
        value = value * rhs
      else:
        if rhs == 0:
          raise ZeroDivisionError("division by zero")
        value = value / rhs
    return value

  def _factor(self) -> fractions.Fraction:
    self.depth += 1
    if self.depth > MAX_DEPTH:
      raise _ParseError("nested too deeply")
    try:
      token = self._take()
      if token in ("+", "-"):
        value = self._factor()
        return value if token == "+" else -value
      if token == "(":
        value = self._expr()
        if self._take() != ")":
          raise _ParseError("missing ')'")
        return value
      if token[0].isdigit() or token[0] == ".":
        digits = token.replace(",", "")
        if sum(c.isdigit() for c in digits) > MAX_NUMBER_DIGITS:
          raise _ParseError("number too long")
        return fractions.Fraction(decimal.Decimal(digits))
      raise _ParseError(f"unexpected {token!r}")
    finally:
      self.depth -= 1


def evaluate_expression(expression: str) -> Optional[fractions.Fraction]:
  """Evaluates a calculator expression exactly, or returns None when it cannot be used.

  Args:
    expression: e.g. ``'48/2'``, ``'1,200 * 0.15'``, ``'(3 + 4) × 2'``, ``'-5 − -2'``,
      ``'.5*8'``.

  Returns:
    The value as a ``fractions.Fraction``; None for an empty or over-long expression, anything
    outside the grammar (see the module docstring) and division by zero.
  """
  if not expression.strip() or len(expression) > MAX_EXPRESSION_CHARS:
    return None
  try:
    return _Parser(_tokenize(expression)).parse()
  except (_ParseError, ZeroDivisionError):
    return None


def format_number(value: fractions.Fraction | int | decimal.Decimal,
                  max_decimals: int = MAX_DECIMALS) -> str:
  """The canonical text of a number: integers without a decimal point, others rounded.

  Args:
    value: the number.
    max_decimals: non-integers are rounded half-up to this many decimals, then trailing zeros
      (and a bare trailing point) are dropped.

  Returns:
    e.g. ``'24'``, ``'-3'``, ``'0.2'``, ``'2.5'``, ``'0.333333'`` (for 1/3), ``'2'`` for 1.9999999.
  """
  value = fractions.Fraction(value)
  if value.denominator == 1:
    return str(value.numerator)
  quantum = decimal.Decimal(1).scaleb(-max_decimals)
  with decimal.localcontext() as ctx:
    ctx.prec = MAX_NUMBER_DIGITS * 4
    rounded = (decimal.Decimal(value.numerator) / decimal.Decimal(value.denominator)).quantize(
        quantum, rounding=decimal.ROUND_HALF_UP)
  text = format(rounded, "f")
  if "." in text:
    text = text.rstrip("0").rstrip(".")
  return "0" if text in ("-0", "") else text


def calculate(expression: str) -> Optional[str]:
  """``format_number(evaluate_expression(expression))``, or None when it cannot be evaluated."""
  value = evaluate_expression(expression)
  return None if value is None else format_number(value)


@dataclasses.dataclass(frozen=True)
class CalculatorCall:
  """A completed ``<<expr=`` found by :func:`find_call`.

  Attributes:
    expression: the text between ``<<`` and ``=``.
    result: the formatted result (:func:`format_number`).
    forced_text: what must follow the previous text: the new text up to and including ``=``,
      then ``result`` and ``>>``.
  """
  expression: str
  result: str
  forced_text: str


def find_call(previous_text: str, text: str) -> Optional[CalculatorCall]:
  """Detects a calculator call completed by the newest piece of decoded text.

  A call is an open annotation (the last ``<<`` is not followed by ``>>``) whose first ``=``
  lies in the new part of the text (``text[len(previous_text):]``), so each call is found
  once, even when one token carries the ``=`` and more (e.g. a piece ``'=2'``): the text after
  the ``=`` is replaced by the forced result.

  Args:
    previous_text: the decoded output before the newest token.
    text: the decoded output with the newest token; must start with `previous_text`.

  Returns:
    A :class:`CalculatorCall`, or None when there is no new call, `text` does not extend
    `previous_text`, or the expression cannot be evaluated (no forcing).
  """
  if not text.startswith(previous_text):
    return None
  start = text.rfind(OPEN)
  if start < 0 or text.rfind(CLOSE) > start:
    return None
  equals = text.find(EQUALS, start + len(OPEN))
  if equals < 0 or equals < len(previous_text):
    return None
  expression = text[start + len(OPEN):equals]
  result = calculate(expression)
  if result is None:
    return None
  return CalculatorCall(expression=expression, result=result,
                        forced_text=text[len(previous_text):equals + 1] + result + CLOSE)
