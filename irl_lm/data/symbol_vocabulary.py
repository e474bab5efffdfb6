"""An irl_lm vocabulary of S numbered symbols written as decimal words: one symbol = one token id.

Text ``'3 17 5'`` encodes to ids ``[5, 19, 7]`` (``id = symbol + 2``; PAD 0 and EOS 1 as in the
SentencePiece vocabularies), so a model's next-token distribution is over exactly the teacher's
symbols plus EOS (and PAD). Decoding stops at the first EOS (seqio's rule) and drops PAD and
ids outside the vocabulary. Used by :mod:`irl_lm.data.known_distribution`; imports neither
seqio nor TensorFlow.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from irl_lm.data.vocabularies import EOS_ID, PAD_ID
from irl_lm.data.vocabulary import Vocabulary

FIRST_SYMBOL_ID = 2


class SymbolVocabulary(Vocabulary):
  """Symbols ``0 .. num_symbols-1`` as ids ``2 .. num_symbols+1``; vocab size ``S + 2``."""

  def __init__(self, num_symbols: int):
    if num_symbols < 1:
      raise ValueError(f"num_symbols must be >= 1, got {num_symbols}.")
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

  def __eq__(self, other: Any) -> bool:
    return isinstance(other, SymbolVocabulary) and other.num_symbols == self.num_symbols

  def __hash__(self) -> int:
    return hash(("SymbolVocabulary", self.num_symbols))

  def __str__(self) -> str:
    return f"SymbolVocabulary(num_symbols={self.num_symbols})"
