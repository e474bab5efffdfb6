"""Built-in GSM8k-shaped arithmetic word problems, generated from templates (no download).

Every example looks like a GSM8k one: a word problem as ``question``, and as ``answer`` a worked
solution, one computation a line, each annotated for the calculator as ``<<expr=result>>``,
ending with ``#### <final answer>``::

  question: Maya buys 4 notebooks for $3 each and 2 pens for $1.5 each. How much money does
            Maya spend in total?
  answer:   The notebooks cost 4*3 = <<4*3=12>>12 dollars.
            The pens cost 2*1.5 = <<2*1.5=3>>3 dollars.
            In total, Maya spends 12+3 = <<12+3=15>>15 dollars.
            #### 15

Each template has several valid solution orders (compute either part first, combine before or
after multiplying, ...); every example picks one at random, so the targets are multi-modal the
way human solutions are. Results are written with
:func:`irl_lm.data.calculator.format_number`, so a calculator that forces results reproduces the targets' annotations exactly.

Every example's problem is kept with all its valid solutions: :func:`solution_records` gives,
per example of a split, every valid solution text and the order its target used (what
:mod:`irl_lm.evaluation.arithmetic` measures diversity against), and :func:`train_order_counts`
how often each order is a train target, per template.

Splits are generated deterministically (one seed per split, Python's ``random.Random``); the
validation and test questions never occur in train, and test questions never in validation.
Generating the default 20,000 / 500 / 1,000 examples takes well under a second.

Task ``arithmetic_word_problems`` (metric family ``gsm8k``): ``question`` -> inputs, ``answer``
-> targets (``final_answer`` kept), with its own shipped 480-piece vocabulary (digits split),
which round-trips this text exactly; gin: ``train.task = @arithmetic_task()``. ``train_examples`` = N trains on a fixed
subset of N of the generated train problems (:func:`irl_lm.data.sources.train_subset`: the same
N for every run and seed, nested); ``sizes`` instead changes the generated data set itself.
This module is pure Python: :func:`register` imports seqio (and TensorFlow) when called.
"""
from __future__ import annotations

import dataclasses
import functools
import random
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence

from irl_lm.data import sources, spec
from irl_lm.data.calculator import calculate, format_number

if TYPE_CHECKING:  # pragma: no cover
  import seqio

TASK = "arithmetic_word_problems"
SPLITS = ("train", "validation", "test")
DEFAULT_SIZES: Mapping[str, int] = {"train": 20000, "validation": 500, "test": 1000}
SPLIT_SEEDS: Mapping[str, int] = {"train": 1000, "validation": 2000, "test": 3000}
FIELDS = ("question", "answer", "final_answer")

_NAMES = ("Maya", "Liam", "Sofia", "Noah", "Aisha", "Mateo", "Chen", "Olivia", "Ravi", "Emma",
          "Kofi", "Hana", "Lucas", "Zara", "Diego", "Ines", "Tom", "Yuki", "Amara", "Jonas")
_PAIRS = (("notebooks", "pens"), ("apples", "pears"), ("books", "magazines"),
          ("shirts", "hats"), ("candles", "mugs"), ("tickets", "snacks"),
          ("plants", "pots"), ("balls", "kites"))
_GOODS = ("boxes", "cookies", "bracelets", "paper cranes", "cupcakes", "postcards")
_THINGS = ("a jacket", "groceries", "a gift", "books", "a bus pass", "lunch")
_ITEMS = (("lamp", "lamps"), ("chair", "chairs"), ("backpack", "backpacks"),
          ("jacket", "jackets"), ("clock", "clocks"))
_FOODS = (("bakery", "loaves of bread"), ("farm", "eggs"), ("orchard", "apples"),
          ("factory", "toys"))


@dataclasses.dataclass(frozen=True)
class Step:
  """One line of a solution: ``{lead} {expr} = <<{expr}={value}>>{value}{tail}``."""
  lead: str
  expr: str
  tail: str

  def render(self) -> str:
    """The line with the calculator annotation; the value is computed by the calculator."""
    value = calculate(self.expr)
    if value is None:  # pragma: no cover - templates only build valid expressions
      raise ValueError(f"template produced an invalid expression {self.expr!r}")
    return f"{self.lead} {self.expr} = <<{self.expr}={value}>>{value}{self.tail}"


@dataclasses.dataclass(frozen=True)
class Problem:
  """A generated problem with its alternative solutions.

  Attributes:
    question: the word problem.
    solutions: each a list of steps; all reach the same final answer.
    final_answer: the formatted final number.
    template: the template's name.
  """
  question: str
  solutions: tuple[tuple[Step, ...], ...]
  final_answer: str
  template: str

  def answer(self, order: int) -> str:
    """The GSM8k-style answer text of solution `order`, ending with ``#### final``."""
    lines = [step.render() for step in self.solutions[order]]
    return "\n".join(lines + [f"#### {self.final_answer}"])


def _n(x: Fraction | int) -> str:
  return format_number(Fraction(x))


def _purchases(rng: random.Random) -> Problem:
  name = rng.choice(_NAMES)
  first, second = rng.choice(_PAIRS)
  a, b = rng.randint(2, 9), rng.randint(2, 9)
  p = rng.randint(2, 15)
  q = Fraction(rng.randint(2, 30), 2)  # whole or half dollars
  A, B = a * p, b * q
  question = (f"{name} buys {a} {first} for ${_n(p)} each and {b} {second} for ${_n(q)} each. "
              f"How much money does {name} spend in total?")
  s_a = Step(f"The {first} cost", f"{a}*{_n(p)}", " dollars.")
  s_b = Step(f"The {second} cost", f"{b}*{_n(q)}", " dollars.")
  solutions = (
      (s_a, s_b, Step(f"In total, {name} spends", f"{_n(A)}+{_n(B)}", " dollars.")),
      (s_b, s_a, Step(f"In total, {name} spends", f"{_n(B)}+{_n(A)}", " dollars.")),
      (Step(f"{name} spends", f"{a}*{_n(p)}+{b}*{_n(q)}", " dollars in total."),),
  )
  return Problem(question, solutions, _n(A + B), "purchases")


def _workers(rng: random.Random) -> Problem:
  n1, n2 = rng.sample(_NAMES, 2)
  goods = rng.choice(_GOODS)
  r1, r2, h = rng.randint(3, 20), rng.randint(3, 20), rng.randint(2, 8)
  question = (f"{n1} can make {r1} {goods} per hour and {n2} can make {r2} {goods} per hour. "
              f"If they both work for {h} hours, how many {goods} do they make altogether?")
  x1, x2 = r1 * h, r2 * h
  s1 = Step(f"{n1} makes", f"{r1}*{h}", f" {goods}.")
  s2 = Step(f"{n2} makes", f"{r2}*{h}", f" {goods}.")
  solutions = (
      (Step("Together they make", f"{r1}+{r2}", f" {goods} per hour."),
       Step(f"In {h} hours they make", f"{r1 + r2}*{h}", f" {goods}.")),
      (s1, s2, Step("Altogether they make", f"{x1}+{x2}", f" {goods}.")),
      (s2, s1, Step("Altogether they make", f"{x2}+{x1}", f" {goods}.")),
  )
  return Problem(question, solutions, _n(x1 + x2), "workers")


def _spending(rng: random.Random) -> Problem:
  name = rng.choice(_NAMES)
  thing1, thing2 = rng.sample(_THINGS, 2)
  k, word = rng.choice(((2, "half"), (4, "a quarter"), (5, "a fifth"), (10, "a tenth")))
  m = k * rng.randint(4, 30)
  spent = Fraction(m, k)
  c = rng.randint(1, int(m - spent) - 1)
  question = (f"{name} has ${m}. {name} spends {word} of it on {thing1} and ${c} on {thing2}. "
              f"How much money does {name} have left?")
  s_first = Step(f"{name} spends", f"{m}/{k}", f" dollars on {thing1}.")
  solutions = (
      (s_first,
       Step(f"After buying {thing1}, {name} has", f"{m}-{_n(spent)}", " dollars."),
       Step(f"{name} has", f"{_n(m - spent)}-{c}", " dollars left.")),
      (s_first,
       Step(f"{name} spends", f"{_n(spent)}+{c}", " dollars in total."),
       Step(f"{name} has", f"{m}-{_n(spent + c)}", " dollars left.")),
  )
  return Problem(question, solutions, _n(m - spent - c), "spending")


def _discount(rng: random.Random) -> Problem:
  singular, plural = rng.choice(_ITEMS)
  p = rng.randint(4, 60)
  d = rng.choice((10, 20, 25, 50))
  n = rng.randint(2, 6)
  off = Fraction(p * d, 100)
  new = p - off
  question = (f"A {singular} costs ${p}. The store gives a {d}% discount on every {singular}. "
              f"How much do {n} {plural} cost after the discount?")
  solutions = (
      (Step("The discount is", f"{p}*{d}/100", f" dollars per {singular}."),
       Step(f"One {singular} costs", f"{p}-{_n(off)}", " dollars."),
       Step(f"{n} {plural} cost", f"{_n(new)}*{n}", " dollars.")),
      (Step(f"Without the discount, {n} {plural} cost", f"{p}*{n}", " dollars."),
       Step("The discount is", f"{p * n}*{d}/100", " dollars."),
       Step(f"{n} {plural} cost", f"{p * n}-{_n(off * n)}", " dollars.")),
      (Step(f"One {singular} costs", f"{p}*{100 - d}/100", " dollars."),
       Step(f"{n} {plural} cost", f"{_n(new)}*{n}", " dollars.")),
  )
  return Problem(question, solutions, _n(new * n), "discount")


def _comparison(rng: random.Random) -> Problem:
  n1, n2 = rng.sample(_NAMES, 2)
  while True:
    a, d1, b, d2 = (rng.randint(5, 40), rng.randint(2, 9), rng.randint(5, 40), rng.randint(2, 9))
    if a * d1 > b * d2:
      break
  question = (f"{n1} reads {a} pages every day for {d1} days. {n2} reads {b} pages every day "
              f"for {d2} days. How many more pages does {n1} read than {n2}?")
  s1 = Step(f"{n1} reads", f"{a}*{d1}", " pages.")
  s2 = Step(f"{n2} reads", f"{b}*{d2}", " pages.")
  last = Step(f"{n1} reads", f"{a * d1}-{b * d2}", f" more pages than {n2}.")
  return Problem(question, ((s1, s2, last), (s2, s1, last)), _n(a * d1 - b * d2), "comparison")


def _stock(rng: random.Random) -> Problem:
  place, goods = rng.choice(_FOODS)
  a, b = rng.randint(20, 90), rng.randint(20, 90)
  c = rng.randint(5, (a + b) // 2)
  e = rng.randint(1, (a + b - c) - 1)
  question = (f"A {place} has {a} {goods} in the morning and gets {b} more in the afternoon. "
              f"It sells {c} {goods} and gives {e} {goods} to a shelter. "
              f"How many {goods} are left?")
  made = Step(f"The {place} has", f"{a}+{b}", f" {goods} in total.")
  gone = Step(f"The {place} gives away or sells", f"{c}+{e}", f" {goods}.")
  solutions = (
      (made, gone, Step("There are", f"{a + b}-{c + e}", f" {goods} left.")),
      (gone, made, Step("There are", f"{a + b}-{c + e}", f" {goods} left.")),
      (made, Step("After the sale there are", f"{a + b}-{c}", f" {goods}."),
       Step("There are", f"{a + b - c}-{e}", f" {goods} left.")),
  )
  return Problem(question, solutions, _n(a + b - c - e), "stock")


TEMPLATES: tuple[Callable[[random.Random], Problem], ...] = (
    _purchases, _workers, _spending, _discount, _comparison, _stock)


def _draw(rng: random.Random) -> tuple[Problem, int]:
  problem = rng.choice(TEMPLATES)(rng)
  return problem, rng.randrange(len(problem.solutions))


def _example(problem: Problem, order: int) -> dict[str, str]:
  return {"question": problem.question, "answer": problem.answer(order),
          "final_answer": problem.final_answer, "template": problem.template,
          "order": str(order)}


def generate_example(rng: random.Random) -> dict[str, str]:
  """Draws one example: a template, its numbers and one of its solution orders.

  Args:
    rng: the random generator (advanced in place).

  Returns:
    ``{'question', 'answer', 'final_answer', 'template', 'order'}`` (all str).
  """
  return _example(*_draw(rng))


@dataclasses.dataclass(frozen=True)
class SolutionRecord:
  """An example's problem with every valid solution, and the order its target used.

  Attributes:
    problem: the generated problem.
    order: index of the target's solution in ``problem.solutions``.
  """
  problem: Problem
  order: int

  @property
  def question(self) -> str:
    return self.problem.question

  @property
  def template(self) -> str:
    return self.problem.template

  @property
  def solutions(self) -> tuple[str, ...]:
    """Every valid answer text, indexed by order (``solutions[order]`` is the target)."""
    return tuple(self.problem.answer(i) for i in range(len(self.problem.solutions)))


def _generate(num: int, seed: int, exclude: frozenset[str]
              ) -> list[tuple[dict[str, str], SolutionRecord]]:
  rng = random.Random(seed)
  out, seen = [], set(exclude)
  attempts = 0
  while len(out) < num:
    attempts += 1
    if attempts > 20 * num + 1000:
      raise ValueError(f"cannot generate {num} distinct problems; ask for fewer.")
    problem, order = _draw(rng)
    if problem.question in seen:
      continue
    seen.add(problem.question)
    out.append((_example(problem, order), SolutionRecord(problem, order)))
  return out


@functools.lru_cache(maxsize=8)
def _splits(sizes: tuple[tuple[str, int], ...], seed: int
            ) -> dict[str, tuple[tuple[dict[str, str], SolutionRecord], ...]]:
  size = dict(sizes)
  test = _generate(size["test"], SPLIT_SEEDS["test"] + seed, frozenset())
  test_q = frozenset(ex["question"] for ex, _ in test)
  validation = _generate(size["validation"], SPLIT_SEEDS["validation"] + seed, test_q)
  held_out = test_q | frozenset(ex["question"] for ex, _ in validation)
  train = _generate(size["train"], SPLIT_SEEDS["train"] + seed, held_out)
  return {"train": tuple(train), "validation": tuple(validation), "test": tuple(test)}


def _split(split: str, sizes: Optional[Mapping[str, int]], seed: int
           ) -> tuple[tuple[dict[str, str], SolutionRecord], ...]:
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} of the arithmetic data set: use one of {SPLITS}.")
  merged = {**DEFAULT_SIZES, **(sizes or {})}
  return _splits(tuple(sorted(merged.items())), seed)[split]


def load_examples(split: str, sizes: Optional[Mapping[str, int]] = None,
                  seed: int = 0) -> list[dict[str, str]]:
  """Returns one split of the built-in arithmetic data set (generated, cached in memory).

  Args:
    split: ``'train'``, ``'validation'`` or ``'test'``.
    sizes: examples per split (default :data:`DEFAULT_SIZES`; missing splits use the default).
    seed: offsets every split's seed (0: the standard data set).

  Returns:
    A list of dicts with str fields ``question``, ``answer`` (worked solution with ``<<e=r>>``
    annotations, ending ``#### final``), ``final_answer``, ``template``, ``order``.

  Raises:
    ValueError: unknown split.
  """
  return [dict(ex) for ex, _ in _split(split, sizes, seed)]


def solution_records(split: str, sizes: Optional[Mapping[str, int]] = None,
                     seed: int = 0) -> list[SolutionRecord]:
  """The :class:`SolutionRecord` of every example of a split, in :func:`load_examples` order
  (the same generation: ``records[i].solutions[records[i].order] == examples[i]['answer']``).

  Raises:
    ValueError: unknown split.
  """
  return [record for _, record in _split(split, sizes, seed)]


def corpus(sizes: Optional[Mapping[str, int]] = None, seed: int = 0,
           splits: Sequence[str] = ("train",)) -> list[str]:
  """Questions and answers of the given splits: the text a vocabulary for this task must cover.

  Returns:
    A list of strings: every question, then every answer, split by split.
  """
  texts = []
  for split in splits:
    examples = load_examples(split, sizes, seed)
    texts += [ex["question"] for ex in examples] + [ex["answer"] for ex in examples]
  return texts


def register(name: str = TASK, *, sizes: Optional[Mapping[str, int]] = None, seed: int = 0,
             vocabulary_path: Optional[str] = None, train_examples: Optional[int] = None,
             replace: bool = False) -> "seqio.Task":
  """Registers the built-in GSM8k-shaped arithmetic word problems (generated, no download).

  Args:
    name: task name.
    sizes: examples per split (default :data:`DEFAULT_SIZES`: 20000 / 500 / 1000).
    seed: offsets the split seeds (0: the standard data set).
    vocabulary_path: SentencePiece model (default: the task's shipped 480-piece model with
      digits split, :data:`irl_lm.data.vocabularies.ARITHMETIC_VOCAB_PATH`; questions take at
      most 96 and answers at most 128 of its tokens).
    train_examples: keep a fixed subset of this many train problems (None: all).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task`` (splits train/validation/test).
  """
  # pylint: disable=g-import-not-at-top
  from irl_lm.data import tasks
  from irl_lm.data import vocabularies
  sizes = dict(sizes) if sizes else None
  return tasks.add_in_memory_task(
      name, load_split=functools.lru_cache(None)(
          functools.partial(load_examples, sizes=sizes, seed=seed)),
      splits=SPLITS, inputs_key="question", targets_key="answer",
      vocabulary=vocabularies.stdlib_vocabulary(vocabulary_path
                                                or vocabularies.ARITHMETIC_VOCAB_PATH),
      metric=SPEC.metric, replace=replace, train_examples=train_examples)


SPEC = spec.TaskSpec(name=TASK, metric="gsm8k", register=register)


def arithmetic_task(name: str = TASK, sizes: Optional[Mapping[str, int]] = None,
                    seed: Optional[int] = None, vocabulary_path: Optional[str] = None,
                    train_examples: Optional[int] = None) -> str:
  """Gin factory: the built-in GSM8k-shaped arithmetic word problems (generated, no download).

  Args:
    name: the task name to register.
    sizes: examples per split (default train 20000, validation 500, test 1000).
    seed: generation seed offset (default 0).
    vocabulary_path: SentencePiece model (default the task's shipped 480-piece model).
    train_examples: train on a fixed subset of N generated train problems (default: all).

  Returns:
    `name`, for ``train.task``.
  """
  return spec.configure(SPEC, name, sizes=spec.as_dict(sizes), seed=seed,
                        vocabulary_path=vocabulary_path, train_examples=train_examples)


def task_settings(name: str) -> Optional[dict[str, Any]]:
  """The generation settings of task `name` when it is this arithmetic task, else None.

  Returns:
    ``{'sizes', 'seed', 'train_examples'}`` as the gin factory recorded them (defaults for the
    default name when no factory was called), or None for any other task.
  """
  recorded = spec.configured(name)
  if recorded is None and name != TASK or recorded is not None and recorded[0] is not SPEC:
    return None
  settings = recorded[1] if recorded else {}
  return {"sizes": settings.get("sizes"), "seed": settings.get("seed", 0),
          "train_examples": settings.get("train_examples")}


def train_order_counts(sizes: Optional[Mapping[str, int]] = None, seed: int = 0,
                       train_examples: Optional[int] = None) -> dict[str, dict[int, int]]:
  """How often each solution order is the target in the train examples, per template.

  Args:
    sizes, seed: as for :func:`load_examples`.
    train_examples: count only the fixed subset the task trains on
      (:func:`irl_lm.data.sources.train_subset`); None: the whole train split.

  Returns:
    ``{template: {order: count}}`` over every order of the template (zero counts included).
  """
  examples = load_examples("train", sizes, seed)
  if train_examples is not None:
    examples = sources.train_subset(examples, train_examples)
  num_orders = {record.template: len(record.problem.solutions)
                for record in solution_records("train", sizes, seed)}
  counts = {template: dict.fromkeys(range(n), 0) for template, n in num_orders.items()}
  for ex in examples:
    counts[ex["template"]][int(ex["order"])] += 1
  return counts
