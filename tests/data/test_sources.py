"""Fixed train subsets (``train_examples``) on in-memory tasks, JSONL and streamed TSV."""
import pytest
import seqio

from irl_lm.data import arithmetic, gsm8k, pipeline, sources, stdlib_docstrings, wmt
from tests.data import helpers

SIZES = {"train": 300, "validation": 20, "test": 20}
ARITH_LENGTHS = {"inputs": 96, "targets": 160}
LENGTHS = {"inputs": 64, "targets": 32}


def test_train_subset_exact_stable_nested():
  examples = [{"id": str(i), "text": f"example {i}"} for i in range(200)]
  small, large = sources.train_subset(examples, 10), sources.train_subset(examples, 50)
  assert len(small) == 10 and len(large) == 50
  assert sources.train_subset(list(examples), 10) == small  # a function of the data alone
  assert set(map(str, small)) <= set(map(str, large))  # nested
  assert [examples.index(ex) for ex in small] == sorted(examples.index(ex) for ex in small)
  assert small != examples[:10]  # a spread-out sample, not the first lines
  assert sources.train_subset(examples, 200) == examples
  with pytest.raises(ValueError, match="has only 200 examples"):
    sources.train_subset(examples, 201)
  for bad in (0, -3, 2.5, True):
    with pytest.raises(ValueError, match="whole number >= 1"):
      sources.check_train_examples(bad)


def _texts(task, split, lengths):
  return [(ex["inputs_text"], ex["targets_text"]) for ex in pipeline.get_examples(
      task, split, num_examples=None, feature_lengths=lengths)]


def _train_rows(task, lengths, seed):
  """One shuffled pass over the train split, as a sorted list of input token rows."""
  batches = pipeline.get_batches(task, "train", feature_lengths=lengths, batch_size=1,
                                 shuffle=True, seed=seed, repeat=False,
        feature_converter=seqio.EncDecFeatureConverter(pack=False))
  return sorted(tuple(b["encoder_input_tokens"][0]) for b in batches)


def _check_subsets(register, lengths, temp_task_names, sizes=(7, 15)):
  """Subsets: exact count, stable, inside the full split, nested; other splits untouched."""
  full, small, large = (f"{register.__module__}_{n}" for n in ("full", "small", "large"))
  temp_task_names += [full, small, large]
  register(full)
  register(small, train_examples=sizes[0])
  register(large, train_examples=sizes[1])
  everything = _texts(full, "train", lengths)
  subset = _texts(small, "train", lengths)
  assert len(subset) == sizes[0] and len(_texts(large, "train", lengths)) == sizes[1]
  assert _texts(small, "train", lengths) == subset  # stable across calls
  assert set(subset) <= set(_texts(large, "train", lengths)) <= set(everything)
  # Shuffling with any seed reorders the same examples.
  assert _train_rows(small, lengths, seed=1) == _train_rows(small, lengths, seed=2)
  assert _texts(small, "test", lengths) == _texts(full, "test", lengths)
  return everything, subset


def test_arithmetic_train_subset(temp_task_names):
  register = lambda name, **kw: arithmetic.register(name, sizes=SIZES, **kw)
  register.__module__ = "arith"
  everything, subset = _check_subsets(register, ARITH_LENGTHS, temp_task_names)
  assert subset != everything[:len(subset)]


def test_stdlib_docstrings_train_subset(stdlib_cache, temp_task_names):
  register = lambda name, **kw: stdlib_docstrings.register(name, **kw)
  register.__module__ = "stdlib"
  _check_subsets(register, LENGTHS, temp_task_names, sizes=(20, 100))


def test_gsm8k_train_subset_from_jsonl(tmp_path, temp_task_names):
  records = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = <<{i}+{i}={2 * i}>>"
              f"{2 * i}\n#### {2 * i}"} for i in range(40)]
  helpers.write_jsonl(str(tmp_path / "train.jsonl"), records)
  helpers.write_jsonl(str(tmp_path / "test.jsonl"), records[:3])
  register = lambda name, **kw: gsm8k.register(name, data_dir=str(tmp_path),
                                               vocabulary_path=helpers.STDLIB_SPM, **kw)
  register.__module__ = "gsm8k"
  _, subset = _check_subsets(register, LENGTHS, temp_task_names, sizes=(5, 12))
  # The subset is drawn from what remains after the validation hold-out.
  temp_task_names.append("gsm8k_heldout")
  gsm8k.register("gsm8k_heldout", data_dir=str(tmp_path), validation_size=30,
                 vocabulary_path=helpers.STDLIB_SPM, train_examples=10)
  assert _texts("gsm8k_heldout", "train", LENGTHS) == [
      (r["question"], r["answer"]) for r in records[:10]]
  assert len(_texts("gsm8k_heldout", "validation", LENGTHS)) == 30
  temp_task_names.append("gsm8k_too_many")
  gsm8k.register("gsm8k_too_many", data_dir=str(tmp_path), validation_size=30,
                 vocabulary_path=helpers.STDLIB_SPM, train_examples=11)
  with pytest.raises(ValueError, match="train_examples=11 but the train split has only 10"):
    _texts("gsm8k_too_many", "train", LENGTHS)
  # Through the gin factory.
  temp_task_names.append("gsm8k_gin_sub")
  gsm8k.gsm8k_task("gsm8k_gin_sub", data_dir=str(tmp_path), vocabulary_path=helpers.STDLIB_SPM,
                   train_examples=5)
  assert _texts("gsm8k_gin_sub", "train", LENGTHS) == subset


def test_wmt_train_subset_is_the_first_pairs(tmp_path, temp_task_names):
  helpers.write_lines(str(tmp_path / "train.tsv"), [f"Hello {i}.\tHallo {i}." for i in range(30)])
  register = lambda name, **kw: wmt.register(
      name, train_files=[str(tmp_path / "train.tsv")], vocabulary_path=helpers.STDLIB_SPM, **kw)
  temp_task_names += ["wmt_sub", "wmt_sub_large"]
  register("wmt_sub", train_examples=4)
  register("wmt_sub_large", train_examples=9)
  prefix = "translate English to German: "
  assert _texts("wmt_sub", "train", LENGTHS) == [(f"{prefix}Hello {i}.", f"Hallo {i}.")
                                                 for i in range(4)]
  assert _train_rows("wmt_sub", LENGTHS, seed=1) == _train_rows("wmt_sub", LENGTHS, seed=2)
  assert set(_texts("wmt_sub", "train", LENGTHS)) <= set(_texts("wmt_sub_large", "train",
                                                                LENGTHS))
