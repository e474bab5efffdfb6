"""Vocabularies: the project's own SentencePiece models for the built-in tasks, and T5's.

Why SentencePiece and not bytes for the built-in task
-----------------------------------------------------
Attention and the decoder loop cost grow with sequence length, and the built-in task exists to
train and evaluate end to end on a laptop CPU. Standard-library functions average ~390 UTF-8
bytes; the shipped 4096-piece unigram model encodes them in ~120 tokens (3.4x shorter), and a
one-line summary of ~55 bytes in ~14 tokens, so a byte vocabulary would need 3-4x longer
encoder/decoder sequences (and ~10x the attention cost) for the same examples. A 4096-piece
vocabulary keeps the embedding and softmax small as well (V = 4096, a multiple of 128).

The model is trained by this project on the *train* split of the built-in data set
(:mod:`irl_lm.data.stdlib_docstrings`: code and summaries), deterministically (one thread, all
sentences, no sampling, fixed seed), with T5's id conventions: pad = 0, eos = 1, unk = 2, no
BOS. Whitespace is kept exactly (identity normalisation, no whitespace collapsing, pieces made of
spaces allowed, newlines are ordinary symbols), so code round-trips byte for byte and
indentation costs one or two pieces per line; unseen characters fall back to byte pieces.
The result is shipped at ``irl_lm/data/vocabularies/stdlib_sp.model``; regenerate it with::

    python -m irl_lm.data.vocabularies            # writes the shipped path
    python -m irl_lm.data.vocabularies --output /tmp/sp.model --vocab_size 8192

Regenerating reproduces the shipped file byte for byte on the interpreter recorded in
:data:`TRAINED_ON_PYTHON` (the data depend on the installed standard library).

The arithmetic word problems (:mod:`irl_lm.data.arithmetic`) have their own model,
``arithmetic_sp.model``: 480 pieces (the most a unigram model finds in that templated text,
256 of them byte pieces), every digit its own piece (``split_digits``), so copying a number from
the question and the calculator's forcing work digit by digit. A 480-row output layer instead of
4096 makes a tiny model's train step several times cheaper, and answers are ~10% shorter than
with the stdlib model. Regenerate it (deterministic on any interpreter: the data are generated)
with ``python -m irl_lm.data.vocabularies --task=arithmetic``.

The paper's tasks use T5's public vocabulary (:func:`t5_vocabulary`), loaded lazily from
Google Cloud Storage the first time it is used, never at import or registration.
:func:`task_vocabulary` turns a task's ``vocabulary`` setting into one of these, a
SentencePiece ``.model`` file, or a Hugging Face ``tokenizer.json``
(:class:`irl_lm.data.hf_tokenizer.HfTokenizerVocabulary`).

Every vocabulary here is an :class:`irl_lm.data.vocabulary.Vocabulary` (no seqio, no
TensorFlow); a seqio task takes its ``as_seqio()``.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from typing import Iterable, Optional, Sequence

import sentencepiece as spm

from irl_lm.data import sources
from irl_lm.data import stdlib_docstrings

from irl_lm.data.vocabulary import SentencePieceVocabulary, Vocabulary

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2

STDLIB_VOCAB_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocabularies",
                                 "stdlib_sp.model")
STDLIB_VOCAB_SIZE = 4096
ARITHMETIC_VOCAB_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocabularies",
                                     "arithmetic_sp.model")
ARITHMETIC_VOCAB_SIZE = 480
SENTENCEPIECE_SEED = 0
# The interpreter whose standard library the shipped model was trained on.
TRAINED_ON_PYTHON = "3.11.7"

T5_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model"
T5_EXTRA_IDS = 100


def training_texts(cache_dir: Optional[str] = None,
                   stdlib_root: Optional[str] = None) -> list[str]:
  """Returns the vocabulary's training corpus: every train-split code, then every summary.

  Args:
    cache_dir: data cache root (default ``$IRL_LM_CACHE_DIR`` or ``~/.cache/irl_lm``).
    stdlib_root: standard-library root (default: the running interpreter's).

  Returns:
    A deterministic list of strings (one SentencePiece "sentence" each; code keeps newlines).
  """
  train = stdlib_docstrings.load_examples("train", cache_dir=cache_dir,
                                          stdlib_root=stdlib_root)
  return [ex["code"] for ex in train] + [ex["summary"] for ex in train]


def train_sentencepiece(texts: Iterable[str], vocab_size: int, *,
                        hard_vocab_limit: bool = True, split_digits: bool = False,
                        seed: int = SENTENCEPIECE_SEED) -> bytes:
  """Trains a deterministic unigram SentencePiece model with T5 ids (pad 0, eos 1, unk 2).

  Args:
    texts: training sentences (may contain newlines, kept as symbols).
    vocab_size: number of pieces, including the 3 special pieces and 256 byte pieces.
    hard_vocab_limit: if False, `vocab_size` is an upper bound (for tiny corpora).
    split_digits: every digit its own piece (numbers are never merged into one piece).
    seed: SentencePiece's random-generator seed.

  Returns:
    The serialised model proto (the bytes of a ``.model`` file).
  """
  spm.set_random_generator_seed(seed)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(list(texts)),
      model_writer=model,
      model_type="unigram",
      vocab_size=vocab_size,
      hard_vocab_limit=hard_vocab_limit,
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True,
      split_by_whitespace=True,
      character_coverage=1.0,
      byte_fallback=True,
      max_sentence_length=16384,
      input_sentence_size=0,
      shuffle_input_sentence=False,
      num_threads=1,
      minloglevel=2,
      # Only when asked: an explicit False changes the stored trainer spec (the model's bytes).
      **({"split_digits": True} if split_digits else {}),
  )
  return model.getvalue()


def train_stdlib_vocabulary(output_path: str = STDLIB_VOCAB_PATH, *,
                            vocab_size: int = STDLIB_VOCAB_SIZE,
                            cache_dir: Optional[str] = None,
                            stdlib_root: Optional[str] = None) -> str:
  """Trains the built-in task's vocabulary on its train split and writes it.

  Args:
    output_path: where to write the ``.model`` file (default: the shipped path).
    vocab_size: number of pieces.
    cache_dir: data cache root.
    stdlib_root: standard-library root.

  Returns:
    `output_path`.
  """
  proto = train_sentencepiece(training_texts(cache_dir, stdlib_root), vocab_size)
  return _write(proto, output_path)


def train_arithmetic_vocabulary(output_path: str = ARITHMETIC_VOCAB_PATH, *,
                                vocab_size: int = ARITHMETIC_VOCAB_SIZE) -> str:
  """Trains the arithmetic word problems' vocabulary on their train split and writes it.

  Args:
    output_path: where to write the ``.model`` file (default: the shipped path).
    vocab_size: number of pieces (at most 485 for the default data set).

  Returns:
    `output_path`.
  """
  from irl_lm.data import arithmetic  # pylint: disable=g-import-not-at-top
  proto = train_sentencepiece(arithmetic.corpus(), vocab_size, split_digits=True)
  return _write(proto, output_path)


def _write(proto: bytes, output_path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  tmp = f"{output_path}.{os.getpid()}.tmp"
  with open(tmp, "wb") as f:
    f.write(proto)
  os.replace(tmp, output_path)
  return output_path


def stdlib_vocabulary(path: str = STDLIB_VOCAB_PATH) -> SentencePieceVocabulary:
  """Returns the shipped vocabulary of the built-in task.

  Args:
    path: the ``.model`` file (default: the shipped one).

  Returns:
    A :class:`SentencePieceVocabulary` (no extra ids; ``vocab_size`` 4096 for the shipped
    model), loaded lazily on first use.
  """
  return SentencePieceVocabulary(path)


def t5_vocabulary(path: str = T5_VOCAB_PATH,
                  extra_ids: int = T5_EXTRA_IDS) -> SentencePieceVocabulary:
  """Returns T5's SentencePiece vocabulary (32000 pieces + 100 sentinel ids = 32100).

  Nothing is read until the vocabulary is first used, so building tasks with it needs no
  network access.

  Args:
    path: the ``sentencepiece.model`` path (default: T5's public GCS copy; a local copy works).
    extra_ids: number of sentinel ids appended, 100 as in T5.

  Returns:
    A lazily loaded :class:`SentencePieceVocabulary`.
  """
  return SentencePieceVocabulary(path, extra_ids=extra_ids)


def task_vocabulary(vocabulary: str, *, eos_token: Optional[str] = None) -> Vocabulary:
  """The vocabulary a task's ``vocabulary`` setting names, read lazily (nothing is opened here).

  Args:
    vocabulary: ``'stdlib'`` (the shipped 4096-piece model), ``'t5'`` (T5's public
      SentencePiece model, 32100 ids), a SentencePiece ``.model`` path (no extra ids), or a
      Hugging Face ``tokenizer.json`` path or a checkpoint directory holding one; paths may
      start with ``{data_root}`` and ``~``.
    eos_token: for a Hugging Face tokenizer, its end-of-sequence token (default: what its
      ``tokenizer_config.json``/``config.json`` say, see :mod:`irl_lm.data.hf_tokenizer`).

  Returns:
    A :class:`Vocabulary`.

  Raises:
    ValueError: an empty setting, or `eos_token` with a SentencePiece vocabulary.
  """
  if not isinstance(vocabulary, str) or not vocabulary:
    raise ValueError(f"vocabulary must be 'stdlib', 't5', a SentencePiece .model path or a "
                     f"Hugging Face tokenizer.json (or its directory), got {vocabulary!r}.")
  if vocabulary in ("stdlib", "t5") or vocabulary.endswith(".model"):
    if eos_token is not None:
      raise ValueError(f"eos_token applies to Hugging Face tokenizers only, and vocabulary "
                       f"{vocabulary!r} is SentencePiece (EOS id 1): drop the eos_token setting.")
    if vocabulary == "stdlib":
      return stdlib_vocabulary()
    if vocabulary == "t5":
      return t5_vocabulary()
    return SentencePieceVocabulary(sources.expand_path(vocabulary))
  from irl_lm.data import hf_tokenizer  # pylint: disable=g-import-not-at-top  (tokenizers)
  return hf_tokenizer.HfTokenizerVocabulary(sources.expand_path(vocabulary), eos_token=eos_token)


def paper_vocabulary(path: Optional[str]) -> Vocabulary:
  """The paper tasks' vocabulary, read lazily: T5's SentencePiece model from `path` (None: its
  public GCS copy; a `.model` file: a local copy, with T5's extra ids), or a Hugging Face
  `tokenizer.json` (or a checkpoint directory holding one) so that an imported decoder-only
  checkpoint reads the task with its own tokenizer."""
  if path is None or path.endswith(".model") or path.startswith("gs://"):
    return t5_vocabulary(path or T5_VOCAB_PATH, extra_ids=T5_EXTRA_IDS)
  return task_vocabulary(path)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: regenerate the shipped vocabulary (see the module docstring).

  Args:
    argv: arguments without the program name (default ``sys.argv[1:]``).

  Returns:
    The process exit status (0).
  """
  parser = argparse.ArgumentParser(
      prog="python -m irl_lm.data.vocabularies",
      description="Train a built-in task's SentencePiece vocabulary on its train split.")
  parser.add_argument("--task", choices=("stdlib_docstrings", "arithmetic"),
                      default="stdlib_docstrings")
  parser.add_argument("--output", default=None)
  parser.add_argument("--vocab_size", type=int, default=None)
  parser.add_argument("--cache_dir", default=None)
  parser.add_argument("--stdlib_root", default=None)
  args = parser.parse_args(argv)
  start = time.time()
  if args.task == "arithmetic":
    path = train_arithmetic_vocabulary(args.output or ARITHMETIC_VOCAB_PATH,
                                       vocab_size=args.vocab_size or ARITHMETIC_VOCAB_SIZE)
    return _report(path, start)
  if sys.version.split()[0] != TRAINED_ON_PYTHON:
    print(f"note: the shipped model was trained on Python {TRAINED_ON_PYTHON}; this is "
          f"{sys.version.split()[0]}, so the result may differ from it.")
  path = train_stdlib_vocabulary(args.output or STDLIB_VOCAB_PATH,
                                 vocab_size=args.vocab_size or STDLIB_VOCAB_SIZE,
                                 cache_dir=args.cache_dir, stdlib_root=args.stdlib_root)
  return _report(path, start)


def _report(path: str, start: float) -> int:
  sp = spm.SentencePieceProcessor(model_file=path)
  print(f"wrote {path}: {sp.get_piece_size()} pieces in {time.time() - start:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
