"""Feature converters in numpy: a task's ``inputs``/``targets`` ids -> a model's features.

Each converter reproduces a seqio converter exactly (same keys, values and packing), so a model
reads the same batches from the numpy pipeline as from a seqio task, and gives that seqio
converter (:meth:`FeatureConverter.seqio_converter`, seqio imported then) for seqio tasks:

* :class:`EncDecFeatureConverter` = ``seqio.EncDecFeatureConverter`` (T5).
* :class:`PrefixLMFeatureConverter` = ``seqio.PrefixLMFeatureConverter`` (packed decoder-only).
* :class:`SplitFeatureConverter`: the decoder-only split layout (unpacked; see
  :class:`irl_lm.models.decoder_only.DecoderOnlyModel`).

Packing is seqio's greedy packing (``seqio.utils.trim_and_pack_dataset`` without custom ops):
the examples are taken in groups of ``max(lengths)``; within a group each example is appended to
the current row when all its features fit, else the row is closed and a new one started; the
last row of a group is closed at the group's end. An example's length is its count of non-zero
ids (seqio's rule), and segment ids are 0 wherever the id is 0.

All arrays are ``np.int32``. This module imports neither seqio nor TensorFlow.
"""
from __future__ import annotations

import abc
import functools
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

Example = Mapping[str, np.ndarray]


def _padded(x: np.ndarray, length: int) -> np.ndarray:
  out = np.zeros([length], np.int32)
  x = np.asarray(x, np.int32)[:length]
  out[:len(x)] = x
  return out


def _pack_group(group: Sequence[Example], lengths: Mapping[str, int]) -> list[dict[str, Any]]:
  keys = list(lengths)
  rows, partial = [], {k: [] for k in keys}
  positions = {k: [] for k in keys}

  def close():
    row = {}
    for k in keys:
      row[k] = _padded(np.asarray(partial[k], np.int32), lengths[k])
      row[k + "_positions"] = _padded(np.asarray(positions[k], np.int32), lengths[k])
      starts = (row[k + "_positions"] == 0).astype(np.int32)
      row[k + "_segment_ids"] = np.cumsum(starts).astype(np.int32) * (row[k] != 0)
    rows.append(row)

  for ex in group:
    one = {}
    for k in keys:
      val = np.asarray(ex[k], np.int32)[:lengths[k]]
      one[k] = val[:int(np.count_nonzero(val))]
    if not all(len(partial[k]) + len(one[k]) <= lengths[k] for k in keys):
      close()
      partial, positions = {k: [] for k in keys}, {k: [] for k in keys}
    for k in keys:
      partial[k] = list(partial[k]) + one[k].tolist()
      positions[k] = list(positions[k]) + list(range(len(one[k])))
  close()
  return rows


def pack(examples: Iterable[Example], lengths: Mapping[str, int]) -> Iterator[dict[str, Any]]:
  """seqio's greedy packing (see the module docstring).

  Args:
    examples: dicts holding int vectors for every key of `lengths`.
    lengths: key -> packed length.

  Yields:
    Rows with every key ``[length]`` plus ``<key>_segment_ids`` and ``<key>_positions``.
  """
  group_size = max(lengths.values())
  group = []
  for ex in examples:
    group.append(ex)
    if len(group) == group_size:
      yield from _pack_group(group, lengths)
      group = []
  if group:
    yield from _pack_group(group, lengths)


def autoregressive_inputs(targets: np.ndarray, segment_ids: np.ndarray | None = None
                          ) -> np.ndarray:
  """seqio's ``make_autoregressive_inputs`` (bos 0): targets shifted right, 0 at every segment
  start. int32 [T] -> [T]."""
  shifted = np.concatenate([[0], targets[:-1]]).astype(np.int32)
  if segment_ids is None:
    return shifted
  prev = np.concatenate([[0], segment_ids[:-1]])
  return (shifted * (segment_ids == prev)).astype(np.int32)


class FeatureConverter(abc.ABC):
  """Task examples (``inputs``, ``targets`` int vectors, EOS appended) -> model features.

  Attributes:
    pack: several examples per row (segment ids and positions added).
  """

  def __init__(self, pack: bool = False):
    self.pack = bool(pack)

  @abc.abstractmethod
  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]
                                ) -> dict[str, int]:
    """``{'inputs': L, 'targets': T}`` -> feature name -> length."""

  @abc.abstractmethod
  def convert(self, examples: Iterable[Example], task_feature_lengths: Mapping[str, int]
              ) -> Iterator[dict[str, np.ndarray]]:
    """Yields one dict of int32 vectors per row (packed rows hold several examples)."""

  @abc.abstractmethod
  def seqio_converter(self) -> Any:
    """The seqio converter giving the same features (imports seqio)."""

  def __repr__(self) -> str:
    return f"{type(self).__name__}(pack={self.pack})"


class EncDecFeatureConverter(FeatureConverter):
  """``seqio.EncDecFeatureConverter``: ``encoder_input_tokens [L]``, ``decoder_target_tokens``,
  ``decoder_input_tokens``, ``decoder_loss_weights [T]``; packed, also ``encoder_segment_ids``,
  ``encoder_positions [L]``, ``decoder_segment_ids``, ``decoder_positions [T]``."""

  def get_model_feature_lengths(self, task_feature_lengths):
    enc, dec = task_feature_lengths["inputs"], task_feature_lengths["targets"]
    out = {"encoder_input_tokens": enc, "decoder_target_tokens": dec,
           "decoder_input_tokens": dec, "decoder_loss_weights": dec}
    if self.pack:
      out.update(encoder_segment_ids=enc, decoder_segment_ids=dec, encoder_positions=enc,
                 decoder_positions=dec)
    return out

  def convert(self, examples, task_feature_lengths):
    lengths = {"inputs": task_feature_lengths["inputs"],
               "targets": task_feature_lengths["targets"]}
    if self.pack:
      rows = pack(examples, lengths)
    else:
      rows = ({k: _padded(ex[k], n) for k, n in lengths.items()} for ex in examples)
    for row in rows:
      targets = row["targets"]
      out = {"encoder_input_tokens": row["inputs"], "decoder_target_tokens": targets,
             "decoder_input_tokens": autoregressive_inputs(targets,
                                                           row.get("targets_segment_ids")),
             "decoder_loss_weights": (targets != 0).astype(np.int32)}
      if self.pack:
        out.update(encoder_segment_ids=row["inputs_segment_ids"],
                   decoder_segment_ids=row["targets_segment_ids"],
                   encoder_positions=row["inputs_positions"],
                   decoder_positions=row["targets_positions"])
      yield out

  def seqio_converter(self):
    import seqio  # pylint: disable=g-import-not-at-top
    return seqio.EncDecFeatureConverter(pack=self.pack)


class PrefixLMFeatureConverter(FeatureConverter):
  """``seqio.PrefixLMFeatureConverter(loss_on_targets_only=True)``: inputs and targets in one
  sequence of S = L + T: ``decoder_target_tokens``, ``decoder_input_tokens``,
  ``decoder_loss_weights`` (targets only), ``decoder_causal_attention`` (1 on the inputs and one
  position more) ``[S]``; packed, also ``decoder_segment_ids``, ``decoder_positions [S]``."""

  def get_model_feature_lengths(self, task_feature_lengths):
    length = task_feature_lengths["inputs"] + task_feature_lengths["targets"]
    out = {"decoder_target_tokens": length, "decoder_input_tokens": length,
           "decoder_loss_weights": length, "decoder_causal_attention": length}
    if self.pack:
      out.update(decoder_segment_ids=length, decoder_positions=length)
    return out

  @staticmethod
  def _concat(ex: Example) -> dict[str, np.ndarray]:
    inputs = np.asarray(ex["inputs"], np.int32)
    targets = np.asarray(ex["targets"], np.int32)
    if targets.size == 0:
      targets = np.zeros([1], np.int32)
    size, width = inputs.size + targets.size, inputs.size
    # A width of 0 is written -1 while packing (packing would read 0 as padding), as seqio.
    return {"targets": np.concatenate([inputs, targets]),
            "inputs_width": np.full([size], width if width else -1, np.int32),
            "inputs_width_add_pos": np.full([size], width + 1, np.int32)}

  def convert(self, examples, task_feature_lengths):
    length = task_feature_lengths["inputs"] + task_feature_lengths["targets"]
    lengths = {"targets": length, "inputs_width": length, "inputs_width_add_pos": length}
    concat = (self._concat(ex) for ex in examples)
    if self.pack:
      rows = pack(concat, lengths)
    else:
      rows = ({k: _padded(ex[k], length) for k in lengths} for ex in concat)
    for row in rows:
      targets = row["targets"]
      inputs_width = np.where(row["inputs_width"] == -1, 0, row["inputs_width"])
      positions = row["targets_positions"] if self.pack else np.arange(length)
      weights = targets != 0
      out = {"decoder_target_tokens": targets,
             "decoder_input_tokens": autoregressive_inputs(targets,
                                                           row.get("targets_segment_ids")),
             "decoder_loss_weights": np.logical_xor(positions < inputs_width,
                                                    weights).astype(np.int32),
             "decoder_causal_attention": (positions < row["inputs_width_add_pos"]
                                          ).astype(np.int32)}
      if self.pack:
        out.update(decoder_segment_ids=row["targets_segment_ids"],
                   decoder_positions=row["targets_positions"])
      yield out

  def seqio_converter(self):
    import seqio  # pylint: disable=g-import-not-at-top
    return seqio.PrefixLMFeatureConverter(loss_on_targets_only=True, pack=self.pack)


class SplitFeatureConverter(FeatureConverter):
  """The decoder-only split layout (unpacked): ``prompt_tokens [L]`` (the inputs right-padded),
  ``prompt_mask [L]`` (1 on the prompt's tokens, 0 on padding), ``decoder_target_tokens [T]``
  (the targets right-padded), ``decoder_input_tokens [T]`` = [last input token (`empty_start_id`
  for an empty prompt), targets[:-1]] and ``decoder_loss_weights [T]`` (1 on the targets). Masks come from
  lengths, never from ids, since 0 may be a real token of an imported vocabulary."""

  def __init__(self, pack: bool = False, empty_start_id: int = 0):
    if pack:
      raise ValueError("the split layout is unpacked; use PrefixLMFeatureConverter(pack=True) "
                       "for packed decoder-only batches.")
    super().__init__(pack=False)
    self.empty_start_id = int(empty_start_id)

  def get_model_feature_lengths(self, task_feature_lengths):
    prompt, target = task_feature_lengths["inputs"], task_feature_lengths["targets"]
    return {"prompt_tokens": prompt, "prompt_mask": prompt, "decoder_target_tokens": target,
            "decoder_input_tokens": target, "decoder_loss_weights": target}

  def convert(self, examples, task_feature_lengths):
    prompt_len, target_len = task_feature_lengths["inputs"], task_feature_lengths["targets"]
    for ex in examples:
      inputs = np.asarray(ex["inputs"], np.int32)[:prompt_len]
      targets = np.asarray(ex["targets"], np.int32)[:target_len]
      padded_targets = _padded(targets, target_len)
      last = inputs[-1:] if inputs.size else np.full([1], self.empty_start_id, np.int32)
      yield {"prompt_tokens": _padded(inputs, prompt_len),
             "prompt_mask": _padded(np.ones_like(inputs), prompt_len),
             "decoder_target_tokens": padded_targets,
             "decoder_input_tokens": np.concatenate([last, padded_targets[:-1]]).astype(np.int32),
             "decoder_loss_weights": _padded(np.ones_like(targets), target_len)}

  def seqio_converter(self):
    return _seqio_split_converter_class()(empty_start_id=self.empty_start_id)


@functools.lru_cache(maxsize=None)
def _seqio_split_converter_class() -> type:
  """:class:`SplitFeatureConverter` as a ``seqio.FeatureConverter`` (built on first use)."""
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  spec = seqio.FeatureConverter.FeatureSpec

  class SeqioSplitFeatureConverter(seqio.FeatureConverter):
    """The split layout in tf.data (see :class:`SplitFeatureConverter`)."""

    TASK_FEATURES = {"inputs": spec(dtype=tf.int32), "targets": spec(dtype=tf.int32)}
    MODEL_FEATURES = {"prompt_tokens": spec(dtype=tf.int32),
                      "prompt_mask": spec(dtype=tf.int32),
                      "decoder_target_tokens": spec(dtype=tf.int32),
                      "decoder_input_tokens": spec(dtype=tf.int32),
                      "decoder_loss_weights": spec(dtype=tf.int32)}
    PACKING_FEATURE_DTYPES = {}

    def __init__(self, empty_start_id: int = 0, **kwargs: Any):
      super().__init__(pack=False, **kwargs)
      self.empty_start_id = empty_start_id

    def _convert_features(self, ds, task_feature_lengths):
      prompt_len, target_len = task_feature_lengths["inputs"], task_feature_lengths["targets"]

      def pad(x, length):
        return tf.pad(x, [[0, length - tf.shape(x)[0]]])

      def convert(ex):
        inputs, targets = ex["inputs"][:prompt_len], pad(ex["targets"][:target_len], target_len)
        last = tf.concat([[self.empty_start_id], inputs], 0)[-1:]
        return {"prompt_tokens": pad(inputs, prompt_len),
                "prompt_mask": pad(tf.ones_like(inputs), prompt_len),
                "decoder_target_tokens": targets,
                "decoder_input_tokens": tf.concat([last, targets[:-1]], 0),
                "decoder_loss_weights": pad(tf.ones_like(ex["targets"][:target_len]),
                                            target_len)}

      return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths):
      return SplitFeatureConverter().get_model_feature_lengths(task_feature_lengths)

  return SeqioSplitFeatureConverter
