"""Decoding "with calculator": a host-driven loop over one jitted decoder step.

While decoding, as soon as a row's text completes ``<<expr=`` (see
:func:`irl_lm.data.calculator.find_call`), the result of ``expr`` and ``>>`` are forced into
that row's output, token by token, and sampling continues after them. Forcing needs the text of
each row at every step, so the loop runs on the host: each step calls one jitted
``model.decode_step`` + sampling function (the cache stays on the device and is donated), then the
host inspects the drawn tokens, replaces them where the calculator writes, and feeds the chosen
tokens back at the next position. Rows that did not trigger the calculator get exactly the
tokens the model drew.

Only temperature sampling (temperature 0 = greedy) is supported here; top-k / top-p and beam
search run without the calculator (:mod:`irl_lm.decoding`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from irl_lm.data import calculator
from irl_lm.decoding import search

_SPACE_PIECE = "\u2581"  # SentencePiece's word-boundary marker


class CalculatorOutput(NamedTuple):
  """Result of :func:`calculator_sample`.

  Attributes:
    tokens: int32 [B, T]: emitted tokens, EOS included, 0 after EOS.
    forced: bool [B, T]: True where the calculator wrote the token.
    lengths: int32 [B]: emitted tokens per row (EOS included; T if cut).
    num_calls: int32 [B]: calculator results forced into each row.
  """
  tokens: np.ndarray
  forced: np.ndarray
  lengths: np.ndarray
  num_calls: np.ndarray


def _char_ids(sp: Any, text: str) -> Optional[list[int]]:
  """One piece per character (bytes for characters without a piece), or None if impossible."""
  unk = sp.unk_id()
  ids = []
  for ch in text:
    piece = _SPACE_PIECE if ch == " " else ch
    pid = sp.piece_to_id(piece)
    if pid != unk and pid < sp.get_piece_size():
      ids.append(pid)
      continue
    byte_ids = [sp.piece_to_id(f"<0x{b:02X}>") for b in ch.encode("utf-8")]
    if any(b == unk for b in byte_ids):
      return None
    ids += byte_ids
  return ids


def continuation_ids(vocabulary: Any, prefix_ids: Sequence[int], prefix_text: str,
                     suffix: str) -> Optional[list[int]]:
  """Token ids that, appended to `prefix_ids`, make the decoded text ``prefix_text + suffix``.

  Tries, in order: the vocabulary's own encoding of `suffix`; for SentencePiece vocabularies
  that encoding without the word-boundary marker that a leading dummy prefix adds (T5's and the
  stdlib model add one, which would insert a space); one piece (or byte piece) per character.
  The first candidate whose decoding checks out is returned.

  Args:
    vocabulary: has ``encode(str) -> list[int]`` and ``decode(list[int]) -> str``; a seqio
      SentencePiece vocabulary also offers ``tokenizer`` (the SentencePiece processor).
    prefix_ids: the row's tokens so far.
    prefix_text: ``vocabulary.decode(prefix_ids)``.
    suffix: the text to append.

  Returns:
    A non-empty list of ids, or None when no candidate reproduces the text.
  """
  target = prefix_text + suffix
  candidates: list[Optional[list[int]]] = [list(vocabulary.encode(suffix))]
  sp = getattr(vocabulary, "tokenizer", None)
  if sp is not None:
    pieces = sp.encode(suffix, out_type=str)
    if pieces and pieces[0].startswith(_SPACE_PIECE) and not suffix.startswith(" "):
      head = pieces[0][len(_SPACE_PIECE):]
      head_id = sp.piece_to_id(head) if head else None
      head_ids = [] if not head else (
          [head_id] if head_id != sp.unk_id() else _char_ids(sp, head))
      if head_ids is not None:
        candidates.append(head_ids + [sp.piece_to_id(p) for p in pieces[1:]])
    candidates.append(_char_ids(sp, suffix))
  for ids in candidates:
    if ids and vocabulary.decode(list(prefix_ids) + ids) == target:
      return ids
  return None


def make_step_fn(model: Any) -> Callable[..., tuple[jax.Array, Any]]:
  """A jitted ``(params, state, tokens [B], position, key, temperature) -> (next [B], state)``.

  Runs ``model.decode_step`` on the tokens fed at `position` and draws the next token from
  ``softmax(logits / temperature)`` (argmax when temperature is 0; never a pad id that is not a
  token, `search.drawable_logits`). The state is donated.
  """
  def step(params, state, tokens_B, position, key, temperature):
    logits_BV, state = model.decode_step(params, state, tokens_B, position)
    logits_BV = search.drawable_logits(model, logits_BV.astype(jnp.float32))
    return search.next_tokens(logits_BV, key, temperature=temperature), state
  return jax.jit(step, donate_argnums=(1,))


def make_init_fn(model: Any, max_decode_length: int) -> Callable[[Any, Any], Any]:
  """A jitted ``(params, prompts [B, L]) -> decode state`` (cache of length T)."""
  return jax.jit(lambda params, enc: model.init_decode_state(params, enc, max_decode_length))


def calculator_sample(model: Any, params: Any, prompts: Any, rng: jax.Array, *,
                      vocabulary: Any, max_decode_length: int, temperature: float = 0.0,
                      eos_id: Optional[int] = None,
                      step_fn: Optional[Callable[..., Any]] = None,
                      init_fn: Optional[Callable[..., Any]] = None,
                      context: Optional[Callable[[], Any]] = None) -> CalculatorOutput:
  """Samples (or greedy-decodes) with GSM8k calculator forcing.

  Args:
    model: has ``init_decode_state`` and ``decode_step`` (docs/INTERFACES.md).
    params: the model's parameters.
    prompts: int32 [B, L].
    rng: PRNG key; step i draws with ``fold_in(rng, i)``.
    vocabulary: decodes/encodes the outputs (``encode``, ``decode``; see
      :func:`continuation_ids`).
    max_decode_length: T.
    temperature: >= 0; 0 is greedy.
    eos_id: end-of-sequence id (default `model.eos_id`).
    step_fn, init_fn: prebuilt :func:`make_step_fn` / :func:`make_init_fn` (reused across
      batches to avoid recompiling) of the model `search.decoding_view` gives (a LoRA model's
      wrapped model, run on the merged parameters); built here when None.
    context: optional context-manager factory entered around device calls (e.g. a
      partitioner's ``activate``).

  Returns:
    :class:`CalculatorOutput` with numpy arrays.
  """
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  ctx = context or contextlib.nullcontext
  with ctx():
    model, params = search.decoding_view(model, params)  # e.g. LoRA: merged once, not per step
  step_fn = step_fn or make_step_fn(model)
  init_fn = init_fn or make_init_fn(model, max_decode_length)
  batch, T = int(prompts.shape[0]), max_decode_length
  eos_id = model.eos_id if eos_id is None else eos_id
  tokens = np.zeros((batch, T), np.int32)
  forced = np.zeros((batch, T), bool)
  lengths = np.zeros((batch,), np.int32)
  num_calls = np.zeros((batch,), np.int32)
  done = np.zeros((batch,), bool)
  ids: list[list[int]] = [[] for _ in range(batch)]
  texts = [""] * batch
  queues: list[list[int]] = [[] for _ in range(batch)]
  feed = np.array(model.start_tokens(prompts), np.int32)  # a writable host copy
  with ctx():
    state = init_fn(params, prompts)
  t = np.float32(temperature)
  for i in range(T):
    if done.all():
      break
    with ctx():
      drawn, state = step_fn(params, state, jnp.asarray(feed), jnp.int32(i),
                             jax.random.fold_in(rng, i), t)
    drawn = np.asarray(jax.device_get(drawn))
    for b in range(batch):
      if done[b]:
        feed[b] = 0
        continue
      text = None
      if queues[b]:
        token = queues[b].pop(0)
        forced[b, i] = True
      else:
        token = int(drawn[b])
        if token != eos_id:
          text = vocabulary.decode(ids[b] + [token])
          call = calculator.find_call(texts[b], text)
          if call is not None:
            continuation = continuation_ids(vocabulary, ids[b], texts[b], call.forced_text)
            if continuation:
              token, queues[b] = continuation[0], continuation[1:]
              forced[b, i] = True
              num_calls[b] += 1
              text = None
      tokens[b, i] = token
      lengths[b] += 1
      feed[b] = token
      if token == eos_id:
        done[b] = True
        continue
      ids[b].append(token)
      texts[b] = text if text is not None else vocabulary.decode(ids[b])
  return CalculatorOutput(tokens=tokens, forced=forced, lengths=lengths, num_calls=num_calls)


def make_calculator_decode_fn(model: Any, *, vocabulary: Any, max_decode_length: int,
                              temperature: float = 0.0,
                              context: Optional[Callable[[], Any]] = None
                              ) -> Callable[[Any, np.ndarray, jax.Array], np.ndarray]:
  """A ``(params, prompts [B, L], rng) -> tokens [B, T]`` decoder with calculator.

  Same signature as :func:`irl_lm.decoding.config.make_decode_fn`'s result, so it plugs
  into the evaluation's prediction loop. The jitted step is built once.
  """
  fns: dict[str, Callable[..., Any]] = {}  # built once, for the model decoding_view gives
  ctx = context or contextlib.nullcontext

  def decode(params, inputs, rng):
    with ctx():
      view_model, view_params = search.decoding_view(model, params)
    if not fns:
      fns.update(step=make_step_fn(view_model), init=make_init_fn(view_model, max_decode_length))
    return calculator_sample(view_model, view_params, inputs, rng, vocabulary=vocabulary,
                             max_decode_length=max_decode_length, temperature=temperature,
                             step_fn=fns["step"], init_fn=fns["init"],
                             context=context).tokens
  return decode
