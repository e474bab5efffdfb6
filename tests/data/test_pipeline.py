"""Tests of the batch pipeline on the built-in task (any seqio feature converter)."""
import importlib

import numpy as np
import pytest
import seqio

from irl_lm.data import pipeline
from irl_lm.data import registry
from irl_lm.data import stdlib_docstrings as sd
from irl_lm.data import tasks

ENC_DEC = seqio.EncDecFeatureConverter(pack=False)
LENGTHS = {"inputs": 64, "targets": 16}

pytestmark = pytest.mark.usefixtures("stdlib_cache")


def _padded(ids, length, pad=0):
  out = np.full([length], pad, np.int32)
  out[:len(ids)] = ids
  return out


def test_tasks_registered_idempotently():
  task = tasks.get("stdlib_docstrings")
  assert isinstance(task, tasks.InMemoryTask)
  importlib.reload(pipeline)  # registering again is a no-op, not an error
  assert tasks.get("stdlib_docstrings") is task
  assert registry.register_all() == registry.TASK_NAMES
  assert tasks.get("stdlib_docstrings") is task
  assert sd.register() is task
  assert pipeline.get_task("stdlib_docstrings") is task
  assert set(task.output_features) == {"inputs", "targets"}
  assert all(f.add_eos for f in task.output_features.values())
  assert pipeline.get_vocabulary("stdlib_docstrings").vocab_size == 4096
  # Its seqio twin (for seqio converters) is registered with seqio under the same name.
  twin = task.seqio_task()
  assert seqio.get_mixture_or_task("stdlib_docstrings") is twin is task.seqio_task()
  xsum_vocab = pipeline.get_vocabulary("xsum")  # T5's, never loaded in tests
  assert isinstance(pipeline.get_task("xsum"), seqio.Task)
  assert xsum_vocab.sentencepiece_model_file.startswith("gs://t5-data/vocabs/cc_all.32000")
  assert xsum_vocab._model is None  # pylint: disable=protected-access


def test_batches_exact_values_unshuffled():
  vocab = pipeline.get_vocabulary("stdlib_docstrings")
  train = sd.load_examples("train")
  it = pipeline.get_batches("stdlib_docstrings", "train", feature_lengths=LENGTHS, batch_size=3,
                            shuffle=False, seed=None, repeat=False, feature_converter=ENC_DEC)
  batch = next(it)
  assert set(batch) == {"encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                        "decoder_loss_weights"}
  for key, value in batch.items():
    length = LENGTHS["inputs"] if key.startswith("encoder") else LENGTHS["targets"]
    assert value.shape == (3, length) and value.dtype == np.int32, key
  for row, ex in enumerate(train[:3]):
    inputs = vocab.encode(ex["code"])[:LENGTHS["inputs"] - 1] + [1]
    targets = vocab.encode(ex["summary"])[:LENGTHS["targets"] - 1] + [1]
    np.testing.assert_array_equal(batch["encoder_input_tokens"][row],
                                  _padded(inputs, LENGTHS["inputs"]))
    np.testing.assert_array_equal(batch["decoder_target_tokens"][row],
                                  _padded(targets, LENGTHS["targets"]))
  targets = batch["decoder_target_tokens"]
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 0], 0)
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], targets[:, :-1])
  np.testing.assert_array_equal(batch["decoder_loss_weights"], (targets != 0).astype(np.int32))
  assert (batch["decoder_loss_weights"] == 0).any()  # some padding exists and weighs 0


def test_batches_shuffled_seeded_and_repeated():
  def first_targets(seed, n=3):
    it = pipeline.get_batches("stdlib_docstrings", "validation", feature_lengths=LENGTHS,
                              batch_size=16, shuffle=True, seed=seed, feature_converter=ENC_DEC)
    return [next(it)["decoder_target_tokens"] for _ in range(n)]
  a, b, c = first_targets(1), first_targets(1), first_targets(2)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])
  # Repeat: more batches than one pass over the split holds.
  n_val = len(sd.load_examples("validation"))
  it = pipeline.get_batches("stdlib_docstrings", "validation", feature_lengths=LENGTHS,
                            batch_size=64, shuffle=True, seed=0, repeat=True, feature_converter=ENC_DEC)
  batches = [next(it) for _ in range(n_val // 64 + 2)]
  assert all(b["encoder_input_tokens"].shape == (64, 64) for b in batches)


def test_one_pass_drops_remainder_and_shards_are_disjoint():
  n_val = len(sd.load_examples("validation"))
  def rows(num_shards, shard_index, shuffle):
    it = pipeline.get_batches("stdlib_docstrings", "validation", feature_lengths=LENGTHS,
                              batch_size=8, shuffle=shuffle, seed=3, repeat=False,
                              num_shards=num_shards, shard_index=shard_index, feature_converter=ENC_DEC)
    return [tuple(r) for b in it for r in b["encoder_input_tokens"]]
  everything = rows(1, 0, shuffle=False)
  assert len(everything) == n_val // 8 * 8
  shard0, shard1 = rows(2, 0, shuffle=True), rows(2, 1, shuffle=True)
  assert abs(len(shard0) - n_val / 2) <= 8 and abs(len(shard1) - n_val / 2) <= 8
  assert not set(shard0) & set(shard1)
  with pytest.raises(ValueError, match="needs a seed"):
    pipeline.get_batches("stdlib_docstrings", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=True, seed=None, num_shards=2, shard_index=1, feature_converter=ENC_DEC)
  with pytest.raises(ValueError, match="shard_index"):
    pipeline.get_batches("stdlib_docstrings", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=False, seed=0, num_shards=2, shard_index=2, feature_converter=ENC_DEC)


def test_packing_gives_segment_ids_and_positions():
  it = pipeline.get_batches("stdlib_docstrings", "train",
                            feature_lengths={"inputs": 256, "targets": 48}, batch_size=2,
                            shuffle=False, seed=None, repeat=False,
                            feature_converter=seqio.EncDecFeatureConverter(pack=True))
  batch = next(it)
  assert {"encoder_segment_ids", "decoder_segment_ids", "encoder_positions",
          "decoder_positions"} <= set(batch)
  seg, tgt = batch["decoder_segment_ids"], batch["decoder_target_tokens"]
  assert seg.shape == (2, 48) and seg.dtype == np.int32
  assert seg.max() >= 2  # several examples share a row
  np.testing.assert_array_equal(seg == 0, tgt == 0)
  np.testing.assert_array_equal(batch["decoder_loss_weights"], (tgt != 0).astype(np.int32))
  for row in range(2):
    for s in range(1, seg[row].max() + 1):
      idx = np.flatnonzero(seg[row] == s)
      np.testing.assert_array_equal(batch["decoder_positions"][row, idx], np.arange(len(idx)))
      assert tgt[row, idx[-1]] == 1  # each packed target ends with EOS
      assert batch["decoder_input_tokens"][row, idx[0]] == 0  # and starts from 0
      np.testing.assert_array_equal(batch["decoder_input_tokens"][row, idx[1:]],
                                    tgt[row, idx[:-1]])
    enc_seg = batch["encoder_segment_ids"][row]
    assert enc_seg.max() == seg[row].max()


def test_get_examples():
  val = sd.load_examples("validation")
  vocab = pipeline.get_vocabulary("stdlib_docstrings")
  examples = pipeline.get_examples("stdlib_docstrings", "validation", num_examples=4,
                                   feature_lengths=LENGTHS)
  assert [ex["index"] for ex in examples] == [0, 1, 2, 3]
  for ex, raw in zip(examples, val):
    assert ex["inputs_text"] == raw["code"] and ex["targets_text"] == raw["summary"]
    assert set(ex) == {"index", "inputs_text", "targets_text", "input_tokens", "target_tokens"}
    assert ex["input_tokens"].dtype == np.int32 and ex["target_tokens"].dtype == np.int32
    expected = vocab.encode(raw["code"])[:LENGTHS["inputs"] - 1] + [1]
    # Prompts are padded with -1 (no real token marks padding).
    np.testing.assert_array_equal(ex["input_tokens"], _padded(expected, LENGTHS["inputs"], -1))
    expected = vocab.encode(raw["summary"])[:LENGTHS["targets"] - 1] + [1]
    np.testing.assert_array_equal(ex["target_tokens"], _padded(expected, LENGTHS["targets"]))


def test_seeded_subset_of_examples_and_texts():
  val = sd.load_examples("validation")
  indices = pipeline.subset_indices(len(val), 5, seed=0)
  assert len(set(indices)) == 5 and list(indices) == sorted(indices)
  assert list(indices) != list(range(5)) and max(indices) < len(val)
  np.testing.assert_array_equal(pipeline.subset_indices(len(val), 5, seed=0), indices)
  assert list(pipeline.subset_indices(len(val), 5, seed=1)) != list(indices)
  assert list(pipeline.subset_indices(3, 5, seed=0)) == [0, 1, 2]
  assert list(pipeline.subset_indices(10, 2, seed=None)) == [0, 1]
  examples = pipeline.get_examples("stdlib_docstrings", "validation", num_examples=5,
                                   feature_lengths=LENGTHS, seed=0)
  assert [ex["index"] for ex in examples] == list(indices)
  assert [ex["targets_text"] for ex in examples] == [val[i]["summary"] for i in indices]
  texts = pipeline.get_texts("stdlib_docstrings", "validation", num_examples=5, seed=0)
  assert texts == {"index": list(indices), "inputs": [val[i]["code"] for i in indices],
                   "targets": [val[i]["summary"] for i in indices]}
  everything = pipeline.get_texts("stdlib_docstrings", "validation")
  assert everything["index"] == list(range(len(val)))


def test_unknown_task_and_split_errors():
  with pytest.raises(ValueError, match=r"Unknown task 'no_such_task'.*stdlib_docstrings.*xsum"):
    pipeline.get_batches("no_such_task", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=False, seed=0, feature_converter=ENC_DEC)
  with pytest.raises(ValueError, match=r"no split 'dev'.*validation"):
    pipeline.get_examples("stdlib_docstrings", "dev", num_examples=1, feature_lengths=LENGTHS)
  with pytest.raises(ValueError, match="feature_lengths"):
    pipeline.get_batches("stdlib_docstrings", "train", feature_lengths={"inputs": 8},
                         batch_size=2, shuffle=False, seed=0, feature_converter=ENC_DEC)


def test_model_feature_lengths():
  assert pipeline.model_feature_lengths(ENC_DEC, LENGTHS) == {
      "encoder_input_tokens": 64, "decoder_input_tokens": 16, "decoder_target_tokens": 16,
      "decoder_loss_weights": 16}


@pytest.mark.parametrize("pack", [False, True])
def test_prefix_lm_converter_gives_decoder_only_features(pack):
  """Any seqio converter works; a prefix LM sees inputs and targets in one sequence."""
  converter = seqio.PrefixLMFeatureConverter(pack=pack)
  lengths = pipeline.model_feature_lengths(converter, LENGTHS)
  assert lengths["decoder_target_tokens"] == LENGTHS["inputs"] + LENGTHS["targets"]
  batch = next(pipeline.get_batches("stdlib_docstrings", "train", feature_lengths=LENGTHS,
                                    batch_size=2, shuffle=False, seed=None, repeat=False,
                                    feature_converter=converter))
  expected_keys = {"decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                   "decoder_causal_attention"}
  if pack:
    expected_keys |= {"decoder_segment_ids", "decoder_positions"}
  assert set(batch) == expected_keys
  for key, value in batch.items():
    assert value.shape == (2, lengths[key]) and value.dtype == np.int32, key
  if not pack:  # row 0 is the first train example: its inputs, then its targets
    vocab = pipeline.get_vocabulary("stdlib_docstrings")
    ex = sd.load_examples("train")[0]
    inputs = vocab.encode(ex["code"])[:LENGTHS["inputs"] - 1] + [1]
    targets = vocab.encode(ex["summary"])[:LENGTHS["targets"] - 1] + [1]
    row = batch["decoder_target_tokens"][0]
    assert row[:len(inputs) + len(targets)].tolist() == inputs + targets
    weights = batch["decoder_loss_weights"][0]
    assert weights[:len(inputs)].sum() == 0  # the loss is on the targets only
    assert weights[len(inputs):len(inputs) + len(targets)].tolist() == [1] * len(targets)


def test_feature_converter_must_be_an_instance():
  with pytest.raises(TypeError, match="seqio.FeatureConverter instance"):
    pipeline.get_batches("stdlib_docstrings", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=False, seed=None, feature_converter=seqio.EncDecFeatureConverter)
