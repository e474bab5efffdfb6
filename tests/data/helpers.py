"""What the data tests share: small file writers, vocabularies that need no network, a guard."""
import builtins
import contextlib
import io
import json
import os
import socket
from typing import Iterator
from unittest import mock

from irl_lm.data import vocabularies

STDLIB_SPM = vocabularies.STDLIB_VOCAB_PATH  # stands in for T5's (not available offline)


def seqio_test_spm() -> str:
  """The tiny SentencePiece model shipped in seqio's wheel (imports seqio)."""
  import seqio  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(seqio.__file__), "test_data", "sentencepiece",
                      "sentencepiece.model")


def write_jsonl(path, records) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")


def write_lines(path, lines) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


@contextlib.contextmanager
def outside_world_forbidden() -> Iterator[None]:
  """Fails on any file open, TF file access, TFDS builder or network connection inside."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def forbidden(*args, **kwargs):
    raise AssertionError(f"registration touched the outside world: {args}")
  with mock.patch.object(builtins, "open", forbidden), \
       mock.patch.object(io, "open", forbidden), \
       mock.patch.object(tf.io.gfile, "GFile", forbidden), \
       mock.patch.object(tf.io.gfile, "exists", forbidden), \
       mock.patch.object(tf.io.gfile, "glob", forbidden), \
       mock.patch.object(tfds, "builder", forbidden), \
       mock.patch.object(socket.socket, "connect", forbidden):
    yield
