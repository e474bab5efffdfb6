"""Tests of the shipped SentencePiece vocabulary and the T5 vocabulary factory."""
import os
import statistics
import subprocess
import sys

import pytest
import sentencepiece as spm

from irl_lm.data import stdlib_docstrings as sd
from irl_lm.data import vocabularies
from irl_lm.data import vocabulary


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("irl_lm_cache"))


def test_shipped_model_ids_and_size():
  assert os.path.exists(vocabularies.STDLIB_VOCAB_PATH)
  sp = spm.SentencePieceProcessor(model_file=vocabularies.STDLIB_VOCAB_PATH)
  assert sp.get_piece_size() == vocabularies.STDLIB_VOCAB_SIZE == 4096
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]


def test_seqio_round_trip_python_and_tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  vocab = vocabularies.stdlib_vocabulary()
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id, vocab.vocab_size) == (0, 1, 2, 4096)
  code = 'def f(x):\n    """Doc."""\n\tif x:\n        return "héllo ✓"  # note\n    return None'
  ids = vocab.encode(code)
  assert 0 not in ids and 1 not in ids and 2 not in ids  # byte fallback: no UNK
  assert vocab.decode(ids) == code  # whitespace, tabs, newlines and unicode survive
  tf_ids = vocab.as_seqio().encode_tf(tf.constant(code)).numpy().tolist()
  assert tf_ids == ids
  assert vocab.as_seqio().decode_tf(tf.constant(ids)).numpy().decode("utf-8") == code
  # Decoding stops at EOS (T5 convention) and padding is dropped.
  summary = "Return the sum of two numbers."
  assert vocab.decode(vocab.encode(summary) + [1, 0, 0]) == summary


def test_compression_on_validation_split(cache_dir):
  sp = spm.SentencePieceProcessor(model_file=vocabularies.STDLIB_VOCAB_PATH)
  val = sd.load_examples("validation", cache_dir=cache_dir)
  code_tokens = statistics.mean(len(sp.encode(ex["code"])) for ex in val)
  code_bytes = statistics.mean(len(ex["code"].encode("utf-8")) for ex in val)
  summary_tokens = statistics.mean(len(sp.encode(ex["summary"])) for ex in val)
  assert code_tokens < code_bytes / 2.5, (code_tokens, code_bytes)
  assert summary_tokens < 25
  assert all(sp.decode(sp.encode(ex["code"])) == ex["code"] for ex in val[:200])


def test_training_is_deterministic():
  texts = [f"def f{i}(x):\n    return x + {i}  # add {i}" for i in range(200)]
  texts += ["Return the sum of x and a constant."] * 20
  first = vocabularies.train_sentencepiece(texts, 300, hard_vocab_limit=False)
  second = vocabularies.train_sentencepiece(texts, 300, hard_vocab_limit=False)
  assert first == second
  sp = spm.SentencePieceProcessor(model_proto=first)
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2)
  assert sp.decode(sp.encode(texts[7])) == texts[7]


def test_t5_vocabulary_is_lazy():
  vocab = vocabularies.t5_vocabulary()
  assert vocab.sentencepiece_model_file == vocabularies.T5_VOCAB_PATH
  assert vocab.extra_ids == 100
  assert vocab._model is None  # pylint: disable=protected-access  (nothing was read)


def test_pure_python_modules_do_not_import_tensorflow():
  code = ("import sys, irl_lm.data.vocabularies, irl_lm.data.stdlib_docstrings; "
          "print('tensorflow' in sys.modules, 'seqio' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.split() == ["False", "False"]


@pytest.mark.slow
@pytest.mark.skipif(sys.version.split()[0] != vocabularies.TRAINED_ON_PYTHON,
                    reason="the shipped model was trained on another standard library")
def test_regenerating_reproduces_shipped_model(cache_dir, tmp_path):
  out = vocabularies.train_stdlib_vocabulary(str(tmp_path / "sp.model"), cache_dir=cache_dir)
  with open(out, "rb") as a, open(vocabularies.STDLIB_VOCAB_PATH, "rb") as b:
    assert a.read() == b.read()


def test_arithmetic_model_round_trips_and_splits_digits(tmp_path):
  from irl_lm.data import arithmetic  # pylint: disable=g-import-not-at-top
  sp = spm.SentencePieceProcessor(model_file=vocabularies.ARITHMETIC_VOCAB_PATH)
  assert sp.get_piece_size() == vocabularies.ARITHMETIC_VOCAB_SIZE == 480
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  examples = arithmetic.load_examples("validation")
  for ex in examples:
    for text in (ex["question"], ex["answer"]):
      assert sp.decode(sp.encode(text)) == text
  pieces = sp.encode(examples[0]["answer"], out_type=str)
  numeric = [p.lstrip("\u2581") for p in pieces if any(c.isdigit() for c in p)]
  assert numeric and all(len(p) == 1 for p in numeric)
  answers = [len(sp.encode(ex["answer"])) for ex in examples]
  assert max(answers) <= 128  # the arithmetic configs' target length
  out = vocabularies.train_arithmetic_vocabulary(str(tmp_path / "a.model"))
  with open(out, "rb") as a, open(vocabularies.ARITHMETIC_VOCAB_PATH, "rb") as b:
    assert a.read() == b.read()


@pytest.mark.parametrize("extra_ids", [0, 100])
def test_sentencepiece_ids_equal_seqios(extra_ids):
  seqio = pytest.importorskip("seqio")
  ours = vocabulary.SentencePieceVocabulary(vocabularies.STDLIB_VOCAB_PATH, extra_ids=extra_ids)
  theirs = seqio.SentencePieceVocabulary(vocabularies.STDLIB_VOCAB_PATH, extra_ids=extra_ids)
  assert (ours.pad_id, ours.eos_id, ours.unk_id, ours.vocab_size) == (
      theirs.pad_id, theirs.eos_id, theirs.unk_id, theirs.vocab_size) == (0, 1, 2,
                                                                         4096 + extra_ids)
  texts = ["def f(x):\n    return x  # ünïcode ✓", "Return the sum.", "", "  two  spaces",
           "a <extra_id_0> b <extra_id_99>"]
  for text in texts:
    assert ours.encode(text) == list(theirs.encode(text)), text
  rows = [[5, 9, 1, 7, 0], [4096, 4097, 4195, 300], [0, 0], [1], [3, 4200, 2, 1, 8]]
  for ids in rows + [ours.encode(t) for t in texts]:
    assert ours.decode(ids) == theirs.decode(ids), ids
