"""The two sources of the pipeline (numpy and seqio) give the same batches on one task."""
import itertools

import numpy as np
import pytest

from irl_lm.data import pipeline
from irl_lm.models import features

seqio = pytest.importorskip("seqio")

TASK = "arithmetic_word_problems"


def _batches(converter, lengths, batch_size=4, num_batches=6, **kwargs):
  it = pipeline.get_batches(TASK, "validation", feature_lengths=lengths, batch_size=batch_size,
                            shuffle=False, seed=None, repeat=False, feature_converter=converter,
                            **kwargs)
  return list(itertools.islice(it, num_batches))


@pytest.mark.parametrize("converter", [
    features.EncDecFeatureConverter(pack=False), features.EncDecFeatureConverter(pack=True),
    features.PrefixLMFeatureConverter(pack=False), features.PrefixLMFeatureConverter(pack=True),
    features.SplitFeatureConverter()], ids=repr)
def test_numpy_and_seqio_sources_give_the_same_features(converter):
  # Unpacked: short lengths, so that trimming and EOS after trimming occur; packed: long
  # enough for several examples per row.
  lengths = {"inputs": 192, "targets": 256} if converter.pack else {"inputs": 40, "targets": 24}
  numpy_batches = _batches(converter, lengths)
  seqio_batches = _batches(converter.seqio_converter(), lengths)
  assert len(numpy_batches) == len(seqio_batches) == 6
  for ours, theirs in zip(numpy_batches, seqio_batches):
    assert set(ours) == set(theirs) == set(converter.get_model_feature_lengths(lengths))
    for key in ours:
      assert ours[key].dtype == np.int32, key
      np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
  if converter.pack:
    assert max(b["decoder_segment_ids"].max() for b in numpy_batches) >= 2


def test_sources_agree_on_shards_and_resume():
  converter = features.EncDecFeatureConverter(pack=False)
  lengths = {"inputs": 32, "targets": 16}
  for shard in range(2):
    ours = _batches(converter, lengths, num_shards=2, shard_index=shard, start_batch=1)
    theirs = _batches(converter.seqio_converter(), lengths, num_shards=2, shard_index=shard,
                      start_batch=1)
    for a, b in zip(ours, theirs, strict=True):
      np.testing.assert_array_equal(a["encoder_input_tokens"], b["encoder_input_tokens"])


def test_examples_and_texts_agree():
  lengths = {"inputs": 32, "targets": 16}
  ours = pipeline.get_examples(TASK, "validation", num_examples=5, feature_lengths=lengths,
                               seed=0)
  task = pipeline.get_task(TASK).seqio_task()
  from irl_lm.data import seqio_pipeline  # pylint: disable=g-import-not-at-top
  theirs = seqio_pipeline.get_examples(task, "validation", num_examples=5, lengths=lengths,
                                       seed=0, subset_indices=pipeline.subset_indices)
  assert [e["index"] for e in ours] == [e["index"] for e in theirs]
  for a, b in zip(ours, theirs):
    assert a["inputs_text"] == b["inputs_text"] and a["targets_text"] == b["targets_text"]
    np.testing.assert_array_equal(a["input_tokens"], b["input_tokens"])
    np.testing.assert_array_equal(a["target_tokens"], b["target_tokens"])
