"""An irl_lm vocabulary over a Hugging Face ``tokenizer.json`` (the ``tokenizers`` package).

Checkpoints imported from Hugging Face (Llama, Qwen2, ...) come with their own tokenizer, usually
a byte-level BPE in ``tokenizer.json``; :class:`HfTokenizerVocabulary` lets a task tokenise
with it exactly as :class:`irl_lm.data.vocabulary.SentencePieceVocabulary` does with a ``.model``
file:

* Encoding adds no special tokens (no BOS, no EOS): a task's template writes any it wants as text
  (e.g. ``'<|im_start|>user\\n{prompt}<|im_end|>'``; added tokens written in the text are matched
  as such), and seqio appends EOS to the features whose ``add_eos`` is set.
* ``eos_id``: the id of the ``eos_token`` given to the constructor; else of ``eos_token`` in
  ``tokenizer_config.json`` next to the file; else ``eos_token_id`` in ``config.json`` there (the
  first one when it is a list); else the first of :data:`COMMON_EOS_TOKENS` the tokenizer has.
* ``pad_id`` is 0 because seqio pads with 0 whatever the vocabulary. In many Hugging Face
  tokenizers id 0 is an ordinary token (GPT-2 and Qwen2: ``'!'``), so padding must be told apart
  by position (loss weights, lengths), never by value.
* Decoding stops at the first EOS (seqio's rule) and drops it; every other id is decoded, special
  tokens included. Ids >= ``vocab_size`` (a model's embedding is often larger than its tokenizer,
  e.g. Qwen2's 151936 rows for 151665 tokens) become the unknown token when the tokenizer has
  one (seqio's rule) and are dropped otherwise.
* The file is read on first use (never at construction, so registering a task reads nothing),
  through ``etils.epath`` (local paths or ``gs://``).

A seqio task takes ``as_seqio()`` (TensorFlow ops through ``tf.numpy_function``, same results).
This module imports tokenizers, not seqio or TensorFlow; import it lazily
(:func:`irl_lm.data.vocabularies.task_vocabulary` does).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import tokenizers

from irl_lm.data.errors import DataError, MissingDatasetError
from irl_lm.data.vocabulary import Vocabulary, path_exists, read_bytes

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
MODEL_CONFIG_FILE = "config.json"
COMMON_EOS_TOKENS = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>")


def tokenizer_file(path: str) -> str:
  """The ``tokenizer.json`` a vocabulary path names: `path` itself if it ends in ``.json``,
  else ``<path>/tokenizer.json`` (a Hugging Face checkpoint directory)."""
  return path if path.endswith(".json") else os.path.join(path, TOKENIZER_FILE)


def load_tokenizer(path: str) -> tokenizers.Tokenizer:
  """Reads a ``tokenizer.json`` file (local or any path ``etils.epath`` reads, e.g. gs://).

  Raises:
    MissingDatasetError: the file does not exist.
    ValueError: the file is not a tokenizer the ``tokenizers`` package can load.
  """
  if not path_exists(path):
    raise MissingDatasetError(
        f"Hugging Face tokenizer {path} does not exist: point the task's vocabulary at a "
        f"tokenizer.json file or at a checkpoint directory holding one (a SentencePiece "
        f"tokenizer.model is given as the path of that .model file).")
  text = read_bytes(path).decode("utf-8")
  try:
    return tokenizers.Tokenizer.from_str(text)
  except Exception as e:  # tokenizers raises a bare Exception
    raise DataError(
       f"{path} cannot be loaded as a Hugging Face tokenizer ({e}): pass a tokenizer.json "
       f"written by tokenizers' Tokenizer.save or transformers' save_pretrained "
       f"(tokenizers {tokenizers.__version__} reads it).") from e


def _read_json(path: str) -> Optional[dict[str, Any]]:
  """The JSON object in `path`, or None when there is no such file."""
  if not path_exists(path):
    return None
  text = read_bytes(path).decode("utf-8")
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(f"{path} is not valid JSON ({e.msg} on line {e.lineno}): fix or remove "
                    "it.") from e
  if not isinstance(value, dict):
    raise DataError(f"{path} holds a JSON {type(value).__name__}, not an object: fix or remove "
                    "it.")
  return value


def _token_id(tokenizer: tokenizers.Tokenizer, token: str, where: str, path: str) -> int:
  token_id = tokenizer.token_to_id(token)
  if token_id is None:
    raise DataError(f"{where} names the end-of-sequence token {token!r}, which the tokenizer "
                    f"{path} does not have: give one of its tokens instead.")
  return token_id


def resolve_eos_id(tokenizer: tokenizers.Tokenizer, path: str,
                   eos_token: Optional[str] = None) -> int:
  """The end-of-sequence id of the tokenizer read from `path` (order in the module docstring).

  Args:
    tokenizer: the loaded tokenizer.
    path: its ``tokenizer.json`` (``tokenizer_config.json`` and ``config.json`` are looked for
      in the same directory).
    eos_token: an explicit EOS token, overriding the files.

  Returns:
    The EOS id, in ``[0, vocab size)``.

  Raises:
    ValueError: the named token is not in the tokenizer, or no EOS can be found.
  """
  if eos_token is not None:
    return _token_id(tokenizer, eos_token, "the task's eos_token setting", path)
  directory = os.path.dirname(path)
  config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
  token = (_read_json(config_path) or {}).get("eos_token")
  if isinstance(token, dict):  # older files: {"content": "</s>", "lstrip": false, ...}
    token = token.get("content")
  if isinstance(token, str) and token:
    return _token_id(tokenizer, token, config_path, path)
  model_config_path = os.path.join(directory, MODEL_CONFIG_FILE)
  token_id = (_read_json(model_config_path) or {}).get("eos_token_id")
  if isinstance(token_id, list) and token_id:
    token_id = token_id[0]
  size = tokenizer.get_vocab_size(with_added_tokens=True)
  if isinstance(token_id, int) and not isinstance(token_id, bool):
    if not 0 <= token_id < size:
      raise DataError(f"{model_config_path} gives eos_token_id {token_id}, outside the "
                      f"tokenizer's {size} ids: fix it, or set the task's eos_token.")
    return token_id
  for token in COMMON_EOS_TOKENS:
    token_id = tokenizer.token_to_id(token)
    if token_id is not None:
      return token_id
  raise DataError(
     f"the tokenizer {path} has no end-of-sequence token irl_lm can find (no eos_token in "
     f"{TOKENIZER_CONFIG_FILE}, no eos_token_id in {MODEL_CONFIG_FILE}, none of "
     f"{list(COMMON_EOS_TOKENS)}): add \"eos_token\": \"<its EOS>\" to {config_path}, or set "
     "the task's eos_token.")


def _unk_id(tokenizer: tokenizers.Tokenizer) -> Optional[int]:
  token = getattr(tokenizer.model, "unk_token", None)  # BPE, WordLevel, WordPiece
  return tokenizer.token_to_id(token) if token else None


class HfTokenizerVocabulary(Vocabulary):
  """An irl_lm vocabulary over a Hugging Face ``tokenizer.json`` (see the module docstring).

  Attributes:
    path: what the task was given: a ``tokenizer.json`` file or a directory holding one.
    tokenizer_file: the ``tokenizer.json`` it reads.
  """

  def __init__(self, path: str, *, eos_token: Optional[str] = None):
    """Records where the tokenizer is; nothing is read until it is first used.

    Args:
      path: a ``tokenizer.json`` (any name ending in ``.json``) or a directory holding one.
      eos_token: the end-of-sequence token, overriding what the files next to it say.
    """
    self.path = path
    self.tokenizer_file = tokenizer_file(path)
    self._eos_token = eos_token
    self._tokenizer: Optional[tokenizers.Tokenizer] = None
    self._eos_id: Optional[int] = None
    self._unk: Optional[int] = None

  @property
  def tokenizer(self) -> tokenizers.Tokenizer:
    """The loaded ``tokenizers.Tokenizer`` (read on first access)."""
    if self._tokenizer is None:
      tokenizer = load_tokenizer(self.tokenizer_file)
      self._eos_id = resolve_eos_id(tokenizer, self.tokenizer_file, self._eos_token)
      self._unk = _unk_id(tokenizer)
      self._tokenizer = tokenizer
    return self._tokenizer

  @property
  def eos_id(self) -> int:
    self.tokenizer  # pylint: disable=pointless-statement  (loads it)
    return self._eos_id

  @property
  def unk_id(self) -> Optional[int]:
    self.tokenizer  # pylint: disable=pointless-statement
    return self._unk

  @property
  def bos_id(self) -> Optional[int]:
    """None: this vocabulary never adds a BOS (a template writes one if the model wants it)."""
    return None

  @property
  def _base_vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids]
    eos = self.eos_id
    if eos in ids:
      ids = ids[:ids.index(eos)]
    size = self._base_vocab_size
    return self.tokenizer.decode([i for i in ids if 0 <= i < size], skip_special_tokens=False)

  def __eq__(self, other: Any) -> bool:
    return (isinstance(other, HfTokenizerVocabulary) and
            other.tokenizer_file == self.tokenizer_file and other._eos_token == self._eos_token)

  def __hash__(self) -> int:
    return hash((self.tokenizer_file, self._eos_token))

  def __str__(self) -> str:
    return f"HfTokenizerVocabulary(tokenizer_file={self.tokenizer_file!r})"
