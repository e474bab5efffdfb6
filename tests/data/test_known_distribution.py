"""The known teacher: exact log-probs, conditionals, entropy and KL checked by enumeration."""
import itertools

import numpy as np
import pytest

from irl_lm.data import known_distribution as kd
from irl_lm.data import spec

SMALL = kd.TeacherConfig(num_symbols=3, prompt_length=2, max_length=4, seed=5,
                         eos_bias=-1.0, eos_slope=0.5)


def all_continuations(config: kd.TeacherConfig):
  """Every continuation the teacher can write: n-1 symbols then EOS, n = 1..T."""
  eos = config.num_symbols
  for n in range(1, config.max_length + 1):
    for body in itertools.product(range(config.num_symbols), repeat=n - 1):
      yield list(body) + [eos]


PROMPTS = [[0, 1], [2, 2], [1, 0]]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_log_probs_sum_to_one_and_match_the_conditionals(prompt):
  teacher = kd.Teacher(SMALL)
  seqs = list(all_continuations(SMALL))
  assert len(seqs) == 1 + 3 + 9 + 27
  probs = np.array([np.exp(teacher.log_prob(prompt, y)) for y in seqs])
  assert probs.sum() == pytest.approx(1.0, abs=1e-12)
  assert np.all(probs > 0)
  y = seqs[-1]  # a 4-token continuation
  rows = teacher.conditionals(prompt, y)
  assert rows.shape == (4, 4)
  np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-12)
  assert np.prod(rows[np.arange(4), y]) == pytest.approx(np.exp(teacher.log_prob(prompt, y)))
  # the last position must end: EOS is certain there
  np.testing.assert_array_equal(rows[3], [0.0, 0.0, 0.0, 1.0])
  # row t depends on the prefix only: the same prefix gives the same rows
  np.testing.assert_allclose(teacher.conditionals(prompt, y[:2] + [0]), rows[:3])


@pytest.mark.parametrize("prompt", PROMPTS)
def test_exact_entropy_and_length_match_enumeration(prompt):
  teacher = kd.Teacher(SMALL)
  seqs = list(all_continuations(SMALL))
  lp = np.array([teacher.log_prob(prompt, y) for y in seqs])
  entropy, length = teacher.entropy(prompt)
  assert entropy == pytest.approx(-np.sum(np.exp(lp) * lp), rel=1e-10)
  assert length == pytest.approx(np.sum(np.exp(lp) * [len(y) for y in seqs]), rel=1e-10)
  per_token = teacher.per_token_entropy(np.array([prompt, prompt]))
  assert per_token == pytest.approx(entropy / length)


def test_markov_kl_matches_enumeration():
  p, q = kd.Teacher(SMALL), kd.Teacher(kd.TeacherConfig(**{**SMALL.__dict__, "seed": 9}))
  prompt = [1, 2]
  seqs = list(all_continuations(SMALL))
  lp = np.array([p.log_prob(prompt, y) for y in seqs])
  lq = np.array([q.log_prob(prompt, y) for y in seqs])
  kl, length = kd.markov_kl(p.transition_log_probs(prompt), q.transition_log_probs(prompt),
                            p.start_state(prompt))
  assert kl == pytest.approx(np.sum(np.exp(lp) * (lp - lq)), rel=1e-10)
  assert kl > 0.01
  assert length == pytest.approx(p.entropy(prompt)[1])
  assert kd.markov_kl(p.transition_log_probs(prompt), p.transition_log_probs(prompt), 2)[0] == 0


def test_samples_follow_the_exact_distribution():
  teacher = kd.Teacher(SMALL)
  prompt = [0, 1]
  samples = teacher.sample(np.array([prompt] * 20000), np.random.default_rng(0))
  assert all(y[-1] == 3 and 3 not in y[:-1] and len(y) <= 4 for y in samples)
  counts: dict[tuple, int] = {}
  for y in samples:
    counts[tuple(y)] = counts.get(tuple(y), 0) + 1
  for y in all_continuations(SMALL):
    p = np.exp(teacher.log_prob(prompt, y))
    freq = counts.get(tuple(y), 0) / 20000
    assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / 20000) + 1e-3, (y, freq, p)


def test_default_teacher_is_moderately_uncertain_with_long_continuations():
  teacher = kd.Teacher()
  prompts = np.random.default_rng(0).integers(0, 32, (20, 8))
  assert 1.0 < teacher.per_token_entropy(prompts) < 2.0
  lengths = [len(y) for y in teacher.sample(prompts, np.random.default_rng(1))]
  assert 10 <= np.mean(lengths) <= 22 and max(lengths) <= 24


def test_splits_are_deterministic_disjoint_and_subsets_nest():
  sizes = {"train": 200, "validation": 30, "test": 40}
  train = kd.load_examples("train", sizes=sizes)
  assert train == kd.load_examples("train", sizes=sizes)
  assert len(train) == 200
  prompts = {s: {ex["prompt"] for ex in kd.load_examples(s, sizes=sizes)} for s in kd.SPLITS}
  assert not prompts["train"] & prompts["validation"]
  assert not prompts["train"] & prompts["test"]
  assert not prompts["validation"] & prompts["test"]
  assert all(len(kd.parse_symbols(ex["prompt"])) == 8 for ex in train)
  small = kd.train_continuations(sizes=sizes, train_examples=10)
  big = kd.train_continuations(sizes=sizes, train_examples=50)
  assert len(small) == 10 and all(y in big for y in small)
  assert all(y[-1] == 32 for y in small)
  other = kd.load_examples("train", kd.TeacherConfig(seed=1), sizes=sizes)
  assert other[0] != train[0]
  with pytest.raises(ValueError, match="unknown split"):
    kd.load_examples("dev")


def test_token_mapping():
  np.testing.assert_array_equal(kd.support_ids(3), [2, 3, 4, 1])
  np.testing.assert_array_equal(kd.ids_to_indices(np.array([2, 4, 1, 0, 5]), 3),
                                [0, 2, 3, -1, -1])
  assert kd.parse_symbols(kd.format_symbols([3, 17, 0])) == [3, 17, 0]


def test_known_task_follows_the_factory_settings():
  name = kd.known_distribution_task(name="kd_factory_test", num_symbols=5, max_length=6,
                                    train_examples=7, sizes={"train": 20, "validation": 4,
                                                             "test": 4})
  task = kd.known_task(name)
  assert task.teacher.num_symbols == 5 and task.teacher.max_length == 6
  assert len(task.train_continuations()) == 7
  assert kd.known_task("gsm8k") is None
  assert kd.known_task(kd.TASK).teacher.num_symbols == 32
  spec.forget(name)  # other test files in this process see only the default tasks


def test_registered_task_tokenises_one_symbol_per_id():
  from irl_lm.data import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  name = kd.known_distribution_task(name="kd_pipeline_test", num_symbols=6, prompt_length=3,
                                    max_length=5, sizes={"train": 20, "validation": 5,
                                                         "test": 5})
  examples = pipeline.get_examples(name, "validation", num_examples=5,
                                   feature_lengths={"inputs": 4, "targets": 5})
  raw = kd.load_examples("validation", kd.TeacherConfig(num_symbols=6, prompt_length=3,
                                                        max_length=5),
                         sizes={"train": 20, "validation": 5, "test": 5})
  for ex, source in zip(examples, raw):
    prompt, continuation = kd.parse_symbols(source["prompt"]), kd.parse_symbols(
        source["continuation"])
    np.testing.assert_array_equal(ex["input_tokens"], [s + 2 for s in prompt] + [1])
    expected = [s + 2 for s in continuation] + [1]
    np.testing.assert_array_equal(ex["target_tokens"][:len(expected)], expected)
    assert not ex["target_tokens"][len(expected):].any()
  vocab = pipeline.get_vocabulary(name)
  assert vocab.vocab_size == 8
  assert vocab.decode([4, 7, 1, 3]) == "2 5"
  assert vocab.encode("0 5") == [2, 7]
  from irl_lm.data import registry  # pylint: disable=g-import-not-at-top  (TensorFlow)
  registry.forget(name)  # other test files in this process see only the default tasks
