"""A built-in task whose demonstrations come from a known stochastic teacher (exact log-probs).

The teacher writes a continuation of symbols ``0 .. S-1`` after a prompt ``x`` of `L` symbols,
ending with EOS (index ``S`` in the teacher's space). Its next-symbol logits at position ``t``
after the previous symbol ``prev`` (the last prompt symbol at ``t = 0``) are::

  logits[v] = A[prev, v] + B[x[t mod L], v]      (v < S)
  logits[S] = eos_bias + eos_slope * t            (EOS)

so each step depends on the previous symbol and on a prompt symbol far back (long-range), and
EOS grows likelier along the sequence; at ``t = max_length - 1`` EOS is certain, so every
continuation has at most `max_length` symbols, EOS included. The tables are drawn from a seeded
RNG and scaled so the per-token entropy is moderate (about 1.5 nats with the defaults):
continuations are multi-modal.

The teacher is Markov in ``(t, prev)``: :meth:`Teacher.transition_log_probs` gives its whole
policy for a prompt as ``[T, S, S+1]`` log-probabilities, from which the log-probability of any
sequence, the conditionals along any prefix, and (by dynamic programming over the state
marginals, :func:`markov_entropy`, :func:`markov_kl`) the exact entropy and the exact KL to any
other policy of the same form follow.

Task ``known_distribution`` (metric family ``rouge`` for the text scores; the evaluator adds the
exact metrics of :mod:`irl_lm.evaluation.known_distribution`): ``inputs`` is the prompt and
``targets`` a teacher sample, both written as decimal symbols separated by spaces
(``'3 17 5'``), with :class:`irl_lm.data.symbol_vocabulary.SymbolVocabulary`: one symbol = one
token id, ``id = symbol + 2`` (PAD 0, EOS 1), so the model's vocabulary is ``S + 2``. Splits are
deterministic (seeded); validation and test prompts never occur in train. gin:
``train.task = @known_distribution_task()``, ``known_distribution_task.train_examples = N``.
This module is pure numpy: :func:`register` imports seqio (and TensorFlow) when called.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from irl_lm.data import sources
from irl_lm.data import spec
from irl_lm.data.vocabularies import EOS_ID

if TYPE_CHECKING:  # pragma: no cover
  import seqio

TASK = "known_distribution"
SPLITS = ("train", "validation", "test")
DEFAULT_SIZES: Mapping[str, int] = {"train": 10000, "validation": 500, "test": 1000}
FIELDS = ("prompt", "continuation")
FIRST_SYMBOL_ID = 2  # token id of symbol 0: ids 0 and 1 are PAD and EOS


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
  """What defines a teacher (its tables are drawn from `seed`).

  Attributes:
    num_symbols: S, the symbols besides EOS.
    prompt_length: L, symbols per prompt.
    max_length: T, the most continuation tokens, EOS included.
    seed: seeds the tables and the splits.
    transition_scale: standard deviation of the previous-symbol table A.
    prompt_scale: standard deviation of the prompt-symbol table B.
    eos_bias, eos_slope: the EOS logit at position t is ``eos_bias + eos_slope * t``.
  """
  num_symbols: int = 32
  prompt_length: int = 8
  max_length: int = 24
  seed: int = 0
  transition_scale: float = 2.0
  prompt_scale: float = 2.0
  eos_bias: float = -10.0
  eos_slope: float = 1.0

  def __post_init__(self):
    if self.num_symbols < 2 or self.prompt_length < 1 or self.max_length < 1:
      raise ValueError(f"a teacher needs num_symbols >= 2, prompt_length >= 1 and "
                       f"max_length >= 1, got {self}.")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  top = np.max(logits, axis=-1, keepdims=True)
  return logits - top - np.log(np.sum(np.exp(logits - top), axis=-1, keepdims=True))


class Teacher:
  """The known distribution (see the module docstring); indices ``0..S-1`` symbols, ``S`` EOS."""

  def __init__(self, config: TeacherConfig = TeacherConfig()):
    self.config = config
    s = config.num_symbols
    rng = np.random.default_rng([config.seed, 0])
    self.transition_SV = np.zeros((s, s + 1))
    self.transition_SV[:, :s] = config.transition_scale * rng.standard_normal((s, s))
    self.prompt_SV = np.zeros((s, s + 1))
    self.prompt_SV[:, :s] = config.prompt_scale * rng.standard_normal((s, s))

  @property
  def num_symbols(self) -> int:
    return self.config.num_symbols

  @property
  def eos(self) -> int:
    """The teacher's index of EOS (S)."""
    return self.config.num_symbols

  @property
  def max_length(self) -> int:
    return self.config.max_length

  def transition_log_probs(self, prompt: Sequence[int]) -> np.ndarray:
    """The whole policy for one prompt.

    Args:
      prompt: L symbols.

    Returns:
      float64 [T, S, S+1]: ``log p(v | x, t, prev)``; row ``t = T-1`` puts all mass on EOS.
    """
    c = self.config
    prompt = np.asarray(prompt, np.int64)
    if prompt.shape != (c.prompt_length,):
      raise ValueError(f"a prompt has {c.prompt_length} symbols, got shape {prompt.shape}.")
    t = np.arange(c.max_length)
    logits_TSV = (self.transition_SV[None, :, :] +
                  self.prompt_SV[prompt[t % c.prompt_length]][:, None, :])
    logits_TSV[:, :, self.eos] = (c.eos_bias + c.eos_slope * t)[:, None]
    log_probs = _log_softmax(logits_TSV)
    log_probs[-1] = -np.inf
    log_probs[-1, :, self.eos] = 0.0
    return log_probs

  def start_state(self, prompt: Sequence[int]) -> int:
    """The `prev` of position 0: the prompt's last symbol."""
    return int(prompt[-1])

  def conditionals(self, prompt: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
    """The teacher's next-token distributions along `tokens` (teacher forcing).

    Args:
      prompt: L symbols.
      tokens: N <= T teacher indices (symbols, possibly EOS last).

    Returns:
      float64 [N, S+1]: row t is ``p(. | x, tokens[:t])``.
    """
    return np.exp(self.conditional_log_probs(prompt, tokens))

  def conditional_log_probs(self, prompt: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
    """``log`` of :meth:`conditionals`: float64 [N, S+1]."""
    tokens = np.asarray(tokens, np.int64)
    n = len(tokens)
    if n > self.max_length:
      raise ValueError(f"{n} tokens: the teacher writes at most {self.max_length}.")
    if n and np.any(tokens[:-1] >= self.num_symbols):
      raise ValueError("only the last token of a continuation may be EOS.")
    prev = np.concatenate([[self.start_state(prompt)], tokens[:-1]]).astype(np.int64)
    return self.transition_log_probs(prompt)[np.arange(n), prev[:n]]

  def log_prob(self, prompt: Sequence[int], continuation: Sequence[int]) -> float:
    """``log p(continuation | prompt)`` (a continuation without EOS: of that prefix)."""
    continuation = np.asarray(continuation, np.int64)
    rows = self.conditional_log_probs(prompt, continuation)
    return float(np.sum(rows[np.arange(len(continuation)), continuation]))

  def sample(self, prompts_NL: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
    """One continuation per prompt (EOS last), drawn with `rng`.

    Args:
      prompts_NL: int [N, L] symbols.
      rng: numpy generator (advanced).

    Returns:
      N lists of teacher indices, each ending with EOS.
    """
    prompts_NL = np.asarray(prompts_NL, np.int64)
    n, c = len(prompts_NL), self.config
    tokens_NT = np.full((n, c.max_length), self.eos, np.int64)
    prev, done = prompts_NL[:, -1].copy(), np.zeros(n, bool)
    for t in range(c.max_length):
      logits = self.transition_SV[prev] + self.prompt_SV[prompts_NL[:, t % c.prompt_length]]
      logits[:, self.eos] = c.eos_bias + c.eos_slope * t
      if t == c.max_length - 1:
        logits[:, :self.eos] = -np.inf
      chosen = np.argmax(logits + rng.gumbel(size=logits.shape), axis=-1)
      tokens_NT[~done, t] = chosen[~done]
      done |= chosen == self.eos
      prev = np.where(done, prev, chosen)
      if done.all():
        break
    return [list(row[:int(np.argmax(row == self.eos)) + 1]) for row in tokens_NT]

  def entropy(self, prompt: Sequence[int]) -> tuple[float, float]:
    """Exact ``(H(Y | x) in nats, E[len Y])`` (EOS counted as a token)."""
    return markov_entropy(self.transition_log_probs(prompt), self.start_state(prompt))

  def per_token_entropy(self, prompts_NL: np.ndarray) -> float:
    """Exact per-token entropy over prompts: ``sum_x H(Y|x) / sum_x E[len Y]`` (nats)."""
    totals = np.array([self.entropy(p) for p in np.asarray(prompts_NL)])
    return float(totals[:, 0].sum() / totals[:, 1].sum())


def _state_marginals(log_probs_TSV: np.ndarray, start: int) -> np.ndarray:
  """``m[t, prev]``: probability that position t is reached (not ended) with that `prev`."""
  num_t, s, _ = log_probs_TSV.shape
  m = np.zeros((num_t, s))
  m[0, start] = 1.0
  for t in range(num_t - 1):
    m[t + 1] = m[t] @ np.exp(log_probs_TSV[t, :, :s])
  return m


def _plogq(p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
  """``p * log_q`` with ``0 * log 0 = 0``."""
  return np.where(p > 0, p * np.where(p > 0, log_q, 0.0), 0.0)


def markov_entropy(log_probs_TSV: np.ndarray, start: int) -> tuple[float, float]:
  """Exact entropy and expected length of a policy Markov in ``(t, prev)``.

  Args:
    log_probs_TSV: [T, S, S+1] log-probabilities, EOS last; EOS ends the sequence.
    start: the `prev` of position 0.

  Returns:
    (sequence entropy in nats, expected number of tokens, EOS included).
  """
  m = _state_marginals(log_probs_TSV, start)
  p = np.exp(log_probs_TSV)
  step_entropy_TS = -np.sum(_plogq(p, log_probs_TSV), axis=-1)
  return float(np.sum(m * step_entropy_TS)), float(np.sum(m))


def markov_kl(log_p_TSV: np.ndarray, log_q_TSV: np.ndarray, start: int
              ) -> tuple[float, float]:
  """Exact ``KL(p || q)`` between two policies Markov in ``(t, prev)`` over the same states.

  Args:
    log_p_TSV, log_q_TSV: [T, S, S+1] log-probabilities, EOS last.
    start: the `prev` of position 0.

  Returns:
    (sequence KL in nats, expected length under p): their ratio is the per-token KL.
  """
  m = _state_marginals(log_p_TSV, start)
  p = np.exp(log_p_TSV)
  step_kl_TS = np.sum(_plogq(p, log_p_TSV) - _plogq(p, log_q_TSV), axis=-1)
  return float(np.sum(m * step_kl_TS)), float(np.sum(m))


# ----------------------------------------------------------------------------- token mapping


def support_ids(num_symbols: int) -> np.ndarray:
  """Model token id of each teacher index: int [S+1] (symbols ``2..S+1``, then EOS's id)."""
  return np.concatenate([np.arange(num_symbols) + FIRST_SYMBOL_ID, [EOS_ID]]).astype(np.int32)


def ids_to_indices(ids: np.ndarray, num_symbols: int) -> np.ndarray:
  """Model token ids -> teacher indices; -1 where the id is none of the teacher's tokens."""
  ids = np.asarray(ids, np.int64)
  symbol = ids - FIRST_SYMBOL_ID
  return np.where(ids == EOS_ID, num_symbols,
                  np.where((symbol >= 0) & (symbol < num_symbols), symbol, -1))


def format_symbols(symbols: Sequence[int]) -> str:
  """``[3, 17, 5] -> '3 17 5'`` (EOS is not written: seqio appends it)."""
  return " ".join(str(int(s)) for s in symbols)


def parse_symbols(text: str) -> list[int]:
  """``'3 17 5' -> [3, 17, 5]``."""
  return [int(word) for word in text.split()]


def sample_log_prob_per_token(teacher: Teacher, prompt_text: str, output_text: str) -> float:
  """The teacher's log-probability per token of a model's sample (its symbols, then EOS).

  A sample that reached the length limit without EOS is scored on its first ``T - 1`` symbols
  and EOS, the teacher's own rule at the limit. NaN when the prompt or the output holds a word
  that is not a symbol.

  Args:
    teacher: the task's teacher.
    prompt_text, output_text: as the evaluator writes them (`format_symbols`).
  """
  try:
    prompt, symbols = parse_symbols(prompt_text), parse_symbols(output_text)
  except ValueError:
    return math.nan
  if (len(prompt) != teacher.config.prompt_length or
      any(not 0 <= s < teacher.num_symbols for s in (*prompt, *symbols))):
    return math.nan
  continuation = symbols[:teacher.max_length - 1] + [teacher.eos]
  return teacher.log_prob(prompt, continuation) / len(continuation)


# ----------------------------------------------------------------------------- splits


def _generate(teacher: Teacher, num: int, split_index: int, exclude: frozenset
              ) -> list[dict[str, str]]:
  c = teacher.config
  rng = np.random.default_rng([c.seed, 1, split_index])
  prompts: list[tuple[int, ...]] = []
  seen = set(exclude)
  while len(prompts) < num:
    for row in rng.integers(0, c.num_symbols, size=(num - len(prompts), c.prompt_length)):
      key = tuple(int(s) for s in row)
      if key not in seen:
        seen.add(key)
        prompts.append(key)
  continuations = teacher.sample(np.array(prompts, np.int64).reshape(num, c.prompt_length), rng)
  return [{"prompt": format_symbols(p), "continuation": format_symbols(y[:-1])}
          for p, y in zip(prompts, continuations)]


@functools.lru_cache(maxsize=8)
def _splits(config: TeacherConfig, sizes: tuple[tuple[str, int], ...]
            ) -> dict[str, tuple[dict[str, str], ...]]:
  teacher, size = Teacher(config), dict(sizes)
  out: dict[str, tuple[dict[str, str], ...]] = {}
  used: frozenset = frozenset()
  for index, split in enumerate(("test", "validation", "train")):
    out[split] = tuple(_generate(teacher, size[split], index, used))
    used = used | {tuple(parse_symbols(ex["prompt"])) for ex in out[split]}
  return out


def load_examples(split: str, config: TeacherConfig = TeacherConfig(),
                  sizes: Optional[Mapping[str, int]] = None) -> list[dict[str, str]]:
  """One split: dicts with ``prompt`` and ``continuation`` (symbols as text, no EOS).

  Raises:
    ValueError: unknown split.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} of the known-distribution task: use one of "
                     f"{SPLITS}.")
  merged = {**DEFAULT_SIZES, **(sizes or {})}
  return [dict(ex) for ex in _splits(config, tuple(sorted(merged.items())))[split]]


def train_continuations(config: TeacherConfig = TeacherConfig(),
                        sizes: Optional[Mapping[str, int]] = None,
                        train_examples: Optional[int] = None) -> list[list[int]]:
  """The train continuations a run trains on (its ``train_examples`` subset), EOS appended."""
  examples = load_examples("train", config, sizes)
  if train_examples is not None:
    examples = sources.train_subset(examples, train_examples)
  eos = config.num_symbols
  return [parse_symbols(ex["continuation"]) + [eos] for ex in examples]


# ----------------------------------------------------------------------------- task


@dataclasses.dataclass(frozen=True)
class KnownTask:
  """What the evaluator needs of a registered known-distribution task."""
  teacher: Teacher
  sizes: Optional[Mapping[str, int]]
  train_examples: Optional[int]

  def train_continuations(self) -> list[list[int]]:
    return train_continuations(self.teacher.config, self.sizes, self.train_examples)


_TASKS: dict[str, KnownTask] = {}


def _teacher_config(settings: Mapping[str, Any]) -> TeacherConfig:
  names = {f.name for f in dataclasses.fields(TeacherConfig)}
  return TeacherConfig(**{k: v for k, v in settings.items() if k in names and v is not None})


def known_task(task_name: str) -> Optional[KnownTask]:
  """The teacher and training data of a known-distribution task, or None for other tasks.

  The settings its gin factory recorded last win, then those it was registered with, then (for
  the default name) the defaults.
  """
  entry = spec.configured(task_name)
  if entry is not None:
    if entry[0] is not SPEC:
      return None
    settings = entry[1]
    return KnownTask(Teacher(_teacher_config(settings)), settings.get("sizes"),
                     settings.get("train_examples"))
  if task_name in _TASKS:
    return _TASKS[task_name]
  return KnownTask(Teacher(), None, None) if task_name == TASK else None


def register(name: str = TASK, *, num_symbols: Optional[int] = None,
             prompt_length: Optional[int] = None, max_length: Optional[int] = None,
             seed: Optional[int] = None, sizes: Optional[Mapping[str, int]] = None,
             train_examples: Optional[int] = None, replace: bool = False) -> "seqio.Task":
  """Registers the known-distribution task (generated in memory, no download).

  Args:
    name: task name.
    num_symbols, prompt_length, max_length, seed: the :class:`TeacherConfig` fields (None:
      the default).
    sizes: examples per split (default :data:`DEFAULT_SIZES`).
    train_examples: keep a fixed subset of this many train demonstrations (None: all).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task`` (splits train/validation/test).
  """
  # pylint: disable=g-import-not-at-top
  from irl_lm.data import symbol_vocabulary
  from irl_lm.data import tasks
  config = _teacher_config(dict(num_symbols=num_symbols, prompt_length=prompt_length,
                                max_length=max_length, seed=seed))
  sizes = dict(sizes) if sizes else None
  _TASKS[name] = KnownTask(Teacher(config), sizes, train_examples)
  return tasks.add_in_memory_task(
      name, load_split=functools.lru_cache(None)(
          functools.partial(load_examples, config=config, sizes=sizes)),
      splits=SPLITS, inputs_key="prompt", targets_key="continuation",
      vocabulary=symbol_vocabulary.SymbolVocabulary(config.num_symbols),
      metric=SPEC.metric, replace=replace, train_examples=train_examples)


SPEC = spec.TaskSpec(name=TASK, metric="rouge", register=register)


def known_distribution_task(name: str = TASK, num_symbols: Optional[int] = None,
                            prompt_length: Optional[int] = None,
                            max_length: Optional[int] = None, seed: Optional[int] = None,
                            sizes: Optional[Mapping[str, int]] = None,
                            train_examples: Optional[int] = None) -> str:
  """Gin factory: demonstrations sampled from a known teacher (exact metrics; no download).

  Args:
    name: the task name to register.
    num_symbols: S (default 32); the model's vocabulary must be at least S + 2.
    prompt_length: L (default 8); max_length: T, EOS included (default 24).
    seed: the teacher's tables and the splits (default 0).
    sizes: examples per split (default train 10000, validation 500, test 1000).
    train_examples: train on a fixed subset of N demonstrations (default: all).

  Returns:
    `name`, for ``train.task``.
  """
  return spec.configure(SPEC, name, num_symbols=num_symbols, prompt_length=prompt_length,
                        max_length=max_length, seed=seed, sizes=spec.as_dict(sizes),
                        train_examples=train_examples)
