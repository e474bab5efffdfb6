"""irl_lm's vocabulary interface, and the SentencePiece vocabulary over ``sentencepiece`` itself.

A :class:`Vocabulary` encodes text to ids and decodes ids to text with seqio's rules, so a task
gives the same tokens and texts whether the numpy pipeline or a seqio task reads it:

* ``encode(s)`` adds no EOS (the pipeline appends it after trimming).
* ``decode(ids)``: with an unknown id, ids ``>= _base_vocab_size`` become it; the ids are cut
  after the first EOS; then the implementation's ``_decode`` turns them into text (which drops
  EOS and PAD).
* ``pad_id`` is 0, ``vocab_size`` counts the extra ids.

:class:`SentencePieceVocabulary` gives exactly the ids of ``seqio.SentencePieceVocabulary``
(extra ids too: T5's 100 sentinels are appended as user-defined pieces ``▁<extra_id_N>`` in
reverse order, as seqio does). Files are read with ``etils.epath`` (local paths or ``gs://``), on
first use only. :meth:`Vocabulary.as_seqio` gives the seqio vocabulary a seqio task needs (seqio
imported then). This module imports neither seqio nor TensorFlow.
"""
from __future__ import annotations

import abc
import threading
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import sentencepiece as spm

if TYPE_CHECKING:  # pragma: no cover
  import seqio


class Vocabulary(abc.ABC):
  """Text <-> ids with seqio's decoding rules (see the module docstring)."""

  extra_ids: int = 0

  @property
  def pad_id(self) -> int:
    return 0  # seqio's padding id, whatever the vocabulary

  @property
  @abc.abstractmethod
  def eos_id(self) -> Optional[int]:
    """The end-of-sequence id."""

  @property
  @abc.abstractmethod
  def unk_id(self) -> Optional[int]:
    """The unknown-token id, or None."""

  @property
  def bos_id(self) -> Optional[int]:
    return None

  @property
  @abc.abstractmethod
  def _base_vocab_size(self) -> int:
    """Ids without the extra ids (PAD, EOS and UNK included)."""

  @property
  def vocab_size(self) -> int:
    """Ids including the extra ids."""
    return self._base_vocab_size + self.extra_ids

  @abc.abstractmethod
  def _encode(self, s: str) -> Sequence[int]:
    """Text -> ids, no EOS."""

  @abc.abstractmethod
  def _decode(self, ids: Sequence[int]) -> str:
    """Ids (at most one EOS, last) -> text."""

  def encode(self, s: str) -> list[int]:
    """Text -> token ids, without EOS."""
    return [int(i) for i in self._encode(s)]

  def decode(self, ids: Iterable[int]) -> str:
    """Token ids -> text, up to the first EOS (seqio's rules, see the module docstring)."""
    clean = [int(i) for i in ids]
    if self.unk_id is not None:
      size = self._base_vocab_size
      clean = [self.unk_id if i >= size else i for i in clean]
    if self.eos_id is not None and self.eos_id in clean:
      clean = clean[:clean.index(self.eos_id) + 1]
    return self._decode(clean)

  def as_seqio(self) -> "seqio.Vocabulary":
    """This vocabulary as a ``seqio.Vocabulary`` (imports seqio and TensorFlow)."""
    from irl_lm.data import seqio_tasks  # pylint: disable=g-import-not-at-top
    return seqio_tasks.SeqioVocabularyAdapter(self)


def read_bytes(path: str) -> bytes:
  """The bytes of a local or ``gs://`` file (``etils.epath``)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  return epath.Path(path).read_bytes()


def path_exists(path: str) -> bool:
  """Whether a local or ``gs://`` path exists (``etils.epath``)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  return epath.Path(path).exists()


_LOAD_LOCK = threading.Lock()


def _processor(model: bytes, extra_ids: int) -> spm.SentencePieceProcessor:
  """A SentencePiece processor of `model` with `extra_ids` sentinels appended (as seqio)."""
  if extra_ids:
    from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
    proto = sentencepiece_model_pb2.ModelProto.FromString(model)
    for i in reversed(range(extra_ids)):
      proto.pieces.add(piece=f"▁<extra_id_{i}>", score=0.0,
                       type=sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED)
    model = proto.SerializeToString()
  processor = spm.SentencePieceProcessor()
  processor.LoadFromSerializedProto(model)
  return processor


class SentencePieceVocabulary(Vocabulary):
  """A SentencePiece ``.model`` (pad 0, eos 1, unk 2 as T5's), with optional extra ids.

  Attributes:
    path: the ``.model`` file (local or ``gs://``), read on first use.
    extra_ids: sentinel ids appended after the model's pieces (T5: 100).
  """

  def __init__(self, path: str, extra_ids: int = 0):
    self.path = path
    self.extra_ids = int(extra_ids)
    self._model: Optional[spm.SentencePieceProcessor] = None

  @property
  def processor(self) -> spm.SentencePieceProcessor:
    """The loaded processor (extra ids included as pieces)."""
    if self._model is None:
      with _LOAD_LOCK:
        if self._model is None:
          self._model = _processor(read_bytes(self.path), self.extra_ids)
    return self._model

  @property
  def tokenizer(self) -> spm.SentencePieceProcessor:
    """The processor, under seqio's name for it (the calculator's forcing reads pieces)."""
    return self.processor

  @property
  def sentencepiece_model_file(self) -> str:
    """The ``.model`` path (seqio's name for it)."""
    return self.path

  @property
  def eos_id(self) -> int:
    return self.processor.eos_id()

  @property
  def unk_id(self) -> int:
    return self.processor.unk_id()

  @property
  def _base_vocab_size(self) -> int:
    # As seqio: the extra ids are pieces of the loaded model, so this counts them.
    return self.processor.GetPieceSize()

  @property
  def vocab_size(self) -> int:
    return self._base_vocab_size

  def _encode(self, s: str) -> Sequence[int]:
    return self.processor.EncodeAsIds(s)

  def _decode(self, ids: Sequence[int]) -> str:
    unk, size = self.processor.unk_id(), self.processor.GetPieceSize()
    return self.processor.DecodeIds([unk if i >= size else int(i) for i in ids])

  def as_seqio(self) -> "seqio.Vocabulary":
    """``seqio.SentencePieceVocabulary`` of the same file and extra ids (TensorFlow tokeniser)."""
    import seqio  # pylint: disable=g-import-not-at-top
    return seqio.SentencePieceVocabulary(self.path, extra_ids=self.extra_ids)

  def __eq__(self, other: Any) -> bool:
    return (isinstance(other, SentencePieceVocabulary) and other.path == self.path and
            other.extra_ids == self.extra_ids)

  def __hash__(self) -> int:
    return hash(("SentencePieceVocabulary", self.path, self.extra_ids))

  def __repr__(self) -> str:
    return f"SentencePieceVocabulary(path={self.path!r}, extra_ids={self.extra_ids})"
