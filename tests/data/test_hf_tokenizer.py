"""The vocabulary over a Hugging Face tokenizer.json (a tiny BPE trained here, offline)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from irl_lm.data import errors, hf_tokenizer, sources, vocabularies, vocabulary
from tests.data import helpers

SPECIALS = ["<pad>", "</s>", "<|im_start|>", "<|im_end|>"]  # ids 0..3 (trained first)
CORPUS = ["the cat sat on the mat", "Question: what is 2 + 3?\nAnswer: 5",
          "hello world, hello cat"]
TEXT = "the cat sat\n  on héllo ✓ 42"


def train_bpe(directory, specials=SPECIALS, configs=None) -> str:
  """Trains a byte-level BPE (exact round trips), saves <directory>/tokenizer.json (+ configs)."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=300, special_tokens=list(specials), show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "tokenizer.json")
  tok.save(path)
  for name, content in (configs or {}).items():
    with open(os.path.join(directory, name), "w") as f:
      json.dump(content, f)
  return path


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("ckpt"))
  train_bpe(directory)
  return directory


def test_round_trip_python_and_tf_paths_agree(bpe_dir):
  vocab = vocabularies.task_vocabulary(bpe_dir)  # a checkpoint directory holding tokenizer.json
  assert isinstance(vocab, hf_tokenizer.HfTokenizerVocabulary)
  assert vocab._tokenizer is None  # pylint: disable=protected-access  (read on first use)
  reference = tokenizers.Tokenizer.from_file(os.path.join(bpe_dir, "tokenizer.json"))
  size = reference.get_vocab_size(with_added_tokens=True)
  assert (vocab.vocab_size, vocab.pad_id, vocab.eos_id, vocab.unk_id, vocab.bos_id) == (
      size, 0, 1, None, None)  # '</s>' is found by name (no config files here)
  ids = vocab.encode(TEXT)
  assert ids == reference.encode(TEXT, add_special_tokens=False).ids
  assert min(ids) >= len(SPECIALS)  # no special token added
  assert vocab.encode("") == []
  assert vocab.decode(ids) == TEXT  # byte-level BPE: newlines, spaces, unicode survive
  assert vocab.as_seqio().encode_tf(tf.constant(TEXT)).numpy().tolist() == ids
  # Special tokens written in the text are matched, and decoded (nothing is skipped) ...
  chat = "<|im_start|>hello<|im_end|>"
  chat_ids = vocab.encode(chat)
  assert chat_ids[0] == 2 and chat_ids[-1] == 3
  assert vocab.decode(chat_ids) == chat
  assert vocab.decode([0] + ids) == "<pad>" + TEXT
  # ... except EOS, where decoding stops; ids beyond the tokenizer (padded embeddings) drop.
  assert vocab.decode(ids + [1] + ids) == TEXT
  assert vocab.decode(ids[:2] + [size, size + 100] + ids[2:] + [1, 0, 0]) == TEXT
  # The TensorFlow path: one row and a batch, equal to the Python path row by row.
  rows = [ids + [1, 0, 0], ids[:3] + [size + 5, 1] + ids, chat_ids]
  width = max(len(r) for r in rows)
  rows = [r + [0] * (width - len(r)) for r in rows]
  as_seqio = vocab.as_seqio()
  assert as_seqio.decode_tf(tf.constant(rows[0])).numpy().decode() == vocab.decode(rows[0])
  batch = as_seqio.decode_tf(tf.constant(rows)).numpy()
  assert [b.decode() for b in batch] == [vocab.decode(r) for r in rows]
  assert [b.decode() for b in batch] == [TEXT, vocab.decode(ids[:3]),
                                         chat + "<pad>" * (width - len(chat_ids))]
  # Inside tf.data, as seqio's tokenize preprocessor runs it.
  ds = tf.data.Dataset.from_tensor_slices([TEXT, chat]).map(vocab.as_seqio().encode_tf)
  assert [x.tolist() for x in ds.as_numpy_iterator()] == [ids, chat_ids]
  assert vocab == vocabularies.task_vocabulary(os.path.join(bpe_dir, "tokenizer.json"))


def test_unknown_token_stands_for_ids_beyond_the_tokenizer(tmp_path):
  tok = tokenizers.Tokenizer(models.WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3,
                                               "b": 4}, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.decoder = decoders.WordPiece()  # joins words with spaces
  tok.save(str(tmp_path / "tokenizer.json"))
  vocab = hf_tokenizer.HfTokenizerVocabulary(str(tmp_path / "tokenizer.json"))
  assert (vocab.vocab_size, vocab.eos_id, vocab.unk_id) == (5, 1, 2)
  assert vocab.encode("a b zz") == [3, 4, 2]
  assert vocab.decode([3, 7, 4]) == "a <unk> b"  # seqio's rule when the tokenizer has an unk
  as_seqio = vocab.as_seqio()
  assert as_seqio.decode_tf(tf.constant([3, 7, 4, 1, 3])).numpy().decode() == "a <unk> b"


@pytest.mark.parametrize("configs,eos_token,expected", [
    ({}, None, "</s>"),  # a common name
    ({"tokenizer_config.json": {"eos_token": "<|im_end|>"}}, None, "<|im_end|>"),
    ({"tokenizer_config.json": {"eos_token": {"content": "<|im_start|>", "lstrip": False}},
      "config.json": {"eos_token_id": 1}}, None, "<|im_start|>"),  # tokenizer_config first
    ({"config.json": {"eos_token_id": [3, 1]}}, None, "<|im_end|>"),  # the first of a list
    ({"config.json": {"eos_token_id": 2}}, None, "<|im_start|>"),
    ({"tokenizer_config.json": {"eos_token": "<|im_end|>"}}, "<|im_start|>", "<|im_start|>"),
], ids=["common_name", "tokenizer_config", "tokenizer_config_dict", "config_list",
        "config_int", "explicit"])
def test_eos_from_the_files_next_to_the_tokenizer(tmp_path, configs, eos_token, expected):
  train_bpe(str(tmp_path), configs=configs)
  vocab = vocabularies.task_vocabulary(str(tmp_path), eos_token=eos_token)
  assert vocab.eos_id == SPECIALS.index(expected)
  assert vocab.decode(vocab.encode("the cat") + [vocab.eos_id] + vocab.encode("sat")) == "the cat"


def test_no_eos_and_unknown_eos_are_explained(tmp_path):
  train_bpe(str(tmp_path / "none"), specials=["<pad>", "<sep>"])
  with pytest.raises(ValueError, match=r"has no end-of-sequence token .* add \"eos_token\": "
                                       r"\"<its EOS>\" to .*tokenizer_config.json"):
    _ = hf_tokenizer.HfTokenizerVocabulary(str(tmp_path / "none")).eos_id
  train_bpe(str(tmp_path / "bad"), configs={"tokenizer_config.json": {"eos_token": "<eot>"}})
  with pytest.raises(ValueError, match=r"tokenizer_config.json names the end-of-sequence token "
                                       r"'<eot>', which the tokenizer .*bad/tokenizer.json does "
                                       r"not have"):
    _ = hf_tokenizer.HfTokenizerVocabulary(str(tmp_path / "bad")).eos_id
  train_bpe(str(tmp_path / "range"), configs={"config.json": {"eos_token_id": 5000}})
  with pytest.raises(ValueError, match=r"gives eos_token_id 5000, outside the tokenizer's"):
    _ = hf_tokenizer.HfTokenizerVocabulary(str(tmp_path / "range")).eos_id
  with pytest.raises(ValueError, match=r"eos_token setting names the end-of-sequence token "
                                       r"'<nope>', which the tokenizer .* does not have"):
    _ = hf_tokenizer.HfTokenizerVocabulary(str(tmp_path / "none"), eos_token="<nope>").eos_id


def test_missing_and_unloadable_tokenizers_are_explained(tmp_path):
  vocab = vocabularies.task_vocabulary(str(tmp_path / "ckpt"))  # nothing read yet
  with pytest.raises(errors.MissingDatasetError,
                     match=r"tokenizer .*ckpt/tokenizer.json does not exist: point the task's "
                           r"vocabulary at a tokenizer.json file or at a checkpoint directory"):
    vocab.encode("x")
  for name, content in (("garbage.json", "{not json"), ("other.json", '{"version": "1.0"}')):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=rf"{name} cannot be loaded as a Hugging Face tokenizer "
                                         r"\(.*\): pass a tokenizer.json"):
      vocabularies.task_vocabulary(str(tmp_path / name)).encode("x")
  train_bpe(str(tmp_path / "cfg"), configs={})
  (tmp_path / "cfg" / "tokenizer_config.json").write_text("[1, 2")
  with pytest.raises(ValueError, match=r"tokenizer_config.json is not valid JSON"):
    _ = vocabularies.task_vocabulary(str(tmp_path / "cfg")).eos_id


def test_task_vocabulary_names(tmp_path, monkeypatch):
  monkeypatch.setenv(sources.DATA_DIR_ENV_VAR, str(tmp_path))
  assert vocabularies.task_vocabulary("stdlib").sentencepiece_model_file == (
      vocabularies.STDLIB_VOCAB_PATH)
  t5 = vocabularies.task_vocabulary("t5")
  assert (t5.sentencepiece_model_file, t5.extra_ids) == (vocabularies.T5_VOCAB_PATH, 100)
  spm = vocabularies.task_vocabulary(helpers.STDLIB_SPM)
  assert isinstance(spm, vocabulary.SentencePieceVocabulary) and spm.vocab_size == 4096
  hf = vocabularies.task_vocabulary("{data_root}/ckpt/tok.json")
  assert hf.tokenizer_file == str(tmp_path / "ckpt" / "tok.json")
  assert vocabularies.task_vocabulary("{data_root}/ckpt").tokenizer_file == str(
      tmp_path / "ckpt" / "tokenizer.json")
  with pytest.raises(ValueError, match="eos_token applies to Hugging Face tokenizers only"):
    vocabularies.task_vocabulary("t5", eos_token="</s>")
  with pytest.raises(ValueError, match="vocabulary must be 'stdlib', 't5'"):
    vocabularies.task_vocabulary("")
  np.testing.assert_array_equal(spm.encode("x"), vocabularies.stdlib_vocabulary().encode("x"))


def test_paper_tasks_read_a_hugging_face_tokenizer(bpe_dir):
  """`vocabulary_path` of GSM8k / TL;DR / WMT / XSum may name an imported checkpoint's
  tokenizer.json (or its directory); a `.model` path stays T5's SentencePiece."""
  from irl_lm.data import hf_tokenizer, seqio_tasks
  for path in (os.path.join(bpe_dir, "tokenizer.json"), bpe_dir):
    vocab = seqio_tasks.t5_vocabulary(path)
    assert isinstance(vocab, hf_tokenizer.HfTokenizerVocabulary)
    assert vocab.decode(vocab.encode("the cat sat")) == "the cat sat"
  assert not isinstance(seqio_tasks.t5_vocabulary("/x/sentencepiece.model"),
                        hf_tokenizer.HfTokenizerVocabulary)
