"""A seqio vocabulary of S numbered symbols written as decimal words: one symbol = one token id.

Text ``'3 17 5'`` encodes to ids ``[5, 19, 7]`` (``id = symbol + 2``; PAD 0 and EOS 1 as in the
SentencePiece vocabularies), so a model's next-token distribution is over exactly the teacher's
symbols plus EOS (and PAD). Decoding stops at the first EOS (seqio's rule) and drops PAD and
ids outside the vocabulary. Used by :mod:`irl_lm.data.known_distribution`; imports seqio and
TensorFlow.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import seqio
import tensorflow as tf

from irl_lm.data import hf_tokenizer
from irl_lm.data.vocabularies import EOS_ID, PAD_ID

FIRST_SYMBOL_ID = 2


class SymbolVocabulary(seqio.Vocabulary):
  """Symbols ``0 .. num_symbols-1`` as ids ``2 .. num_symbols+1``; vocab size ``S + 2``."""

  def __init__(self, num_symbols: int):
    if num_symbols < 1:
      raise ValueError(f"num_symbols must be >= 1, got {num_symbols}.")
    super().__init__(extra_ids=0)
    self.num_symbols = num_symbols

  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def unk_id(self) -> Optional[int]:
    return None

  @property
  def _base_vocab_size(self) -> int:
    return self.num_symbols + FIRST_SYMBOL_ID

  def _encode(self, s: str) -> Sequence[int]:
    ids = [int(word) + FIRST_SYMBOL_ID for word in s.split()]
    bad = [i - FIRST_SYMBOL_ID for i in ids if not FIRST_SYMBOL_ID <= i < self._base_vocab_size]
    if bad:
      raise ValueError(f"symbols {bad} are outside 0..{self.num_symbols - 1}.")
    return ids

  def _decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids]
    if EOS_ID in ids:
      ids = ids[:ids.index(EOS_ID)]
    return " ".join(str(i - FIRST_SYMBOL_ID) for i in ids
                    if FIRST_SYMBOL_ID <= i < self._base_vocab_size)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """A scalar tf.string of decimal words -> int32 ids [N]."""
    words = tf.strings.split(s)
    return tf.strings.to_number(words, out_type=tf.int32) + FIRST_SYMBOL_ID

  def _decode_rows(self, ids_BT: np.ndarray) -> np.ndarray:
    if ids_BT.shape[-1] == 0:
      return np.full(ids_BT.shape[:-1], b"", dtype=object)
    texts = [self._decode(row).encode("utf-8") for row in ids_BT.reshape(-1, ids_BT.shape[-1])]
    return np.array(texts, dtype=object).reshape(ids_BT.shape[:-1])

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """int ids ``[T]`` or ``[B, T]`` -> tf.string ``[]`` or ``[B]``, as :meth:`decode` does."""
    return hf_tokenizer.decode_tf_with(self._decode_rows, ids)

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, SymbolVocabulary) and other.num_symbols == self.num_symbols

  def __hash__(self) -> int:
    return hash(("SymbolVocabulary", self.num_symbols))

  def __str__(self) -> str:
    return f"SymbolVocabulary(num_symbols={self.num_symbols})"
