"""Tests of the seqio tasks and the batch pipeline (built-in task, XSum through TFDS mocks)."""
import builtins
import importlib
import io
import os
import socket
from unittest import mock

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from irl_lm.data import pipeline
from irl_lm.data import stdlib_docstrings as sd
from irl_lm.data import tasks

LENGTHS = {"inputs": 64, "targets": 16}
SEQIO_TEST_SPM = os.path.join(os.path.dirname(seqio.__file__), "test_data", "sentencepiece",
                              "sentencepiece.model")


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
  """Points the built-in task's cache at a temporary directory for this module."""
  path = str(tmp_path_factory.mktemp("irl_lm_cache"))
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(sd.CACHE_ENV_VAR, path)
    yield path


@pytest.fixture()
def temp_task_names():
  """Task names registered by a test; removed from the registry afterwards."""
  names = []
  yield names
  for name in names:
    seqio.TaskRegistry.remove(name)


def _padded(ids, length):
  out = np.zeros([length], np.int32)
  out[:len(ids)] = ids
  return out


def test_tasks_registered_idempotently():
  assert {"stdlib_docstrings", "xsum"} <= set(seqio.TaskRegistry.names())
  task = seqio.get_mixture_or_task("stdlib_docstrings")
  importlib.reload(tasks)  # registering again is a no-op, not an error
  assert seqio.get_mixture_or_task("stdlib_docstrings") is task
  assert tasks.register_stdlib_task() is task
  assert set(task.output_features) == {"inputs", "targets"}
  assert all(f.add_eos for f in task.output_features.values())
  assert pipeline.get_vocabulary("stdlib_docstrings").vocab_size == 4096
  xsum_vocab = pipeline.get_vocabulary("xsum")  # T5's, never loaded in tests
  assert xsum_vocab.sentencepiece_model_file.startswith("gs://t5-data/vocabs/cc_all.32000")
  assert xsum_vocab._model is None  # pylint: disable=protected-access


def test_batches_exact_values_unshuffled():
  vocab = pipeline.get_vocabulary("stdlib_docstrings")
  train = sd.load_examples("train")
  it = pipeline.get_batches("stdlib_docstrings", "train", feature_lengths=LENGTHS, batch_size=3,
                            shuffle=False, seed=None, repeat=False)
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
                              batch_size=16, shuffle=True, seed=seed)
    return [next(it)["decoder_target_tokens"] for _ in range(n)]
  a, b, c = first_targets(1), first_targets(1), first_targets(2)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])
  # Repeat: more batches than one pass over the split holds.
  n_val = len(sd.load_examples("validation"))
  it = pipeline.get_batches("stdlib_docstrings", "validation", feature_lengths=LENGTHS,
                            batch_size=64, shuffle=True, seed=0, repeat=True)
  batches = [next(it) for _ in range(n_val // 64 + 2)]
  assert all(b["encoder_input_tokens"].shape == (64, 64) for b in batches)


def test_one_pass_drops_remainder_and_shards_are_disjoint():
  n_val = len(sd.load_examples("validation"))
  def rows(num_shards, shard_index, shuffle):
    it = pipeline.get_batches("stdlib_docstrings", "validation", feature_lengths=LENGTHS,
                              batch_size=8, shuffle=shuffle, seed=3, repeat=False,
                              num_shards=num_shards, shard_index=shard_index)
    return [tuple(r) for b in it for r in b["encoder_input_tokens"]]
  everything = rows(1, 0, shuffle=False)
  assert len(everything) == n_val // 8 * 8
  shard0, shard1 = rows(2, 0, shuffle=True), rows(2, 1, shuffle=True)
  assert abs(len(shard0) - n_val / 2) <= 8 and abs(len(shard1) - n_val / 2) <= 8
  assert not set(shard0) & set(shard1)
  with pytest.raises(ValueError, match="needs a seed"):
    pipeline.get_batches("stdlib_docstrings", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=True, seed=None, num_shards=2, shard_index=1)
  with pytest.raises(ValueError, match="shard_index"):
    pipeline.get_batches("stdlib_docstrings", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=False, seed=0, num_shards=2, shard_index=2)


def test_packing_gives_segment_ids_and_positions():
  it = pipeline.get_batches("stdlib_docstrings", "train",
                            feature_lengths={"inputs": 256, "targets": 48}, batch_size=2,
                            shuffle=False, seed=None, pack=True, repeat=False)
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
  assert len(examples) == 4
  for ex, raw in zip(examples, val):
    assert ex["inputs_text"] == raw["code"] and ex["targets_text"] == raw["summary"]
    assert ex["encoder_input_tokens"].dtype == np.int32
    expected = vocab.encode(raw["code"])[:LENGTHS["inputs"] - 1] + [1]
    np.testing.assert_array_equal(ex["encoder_input_tokens"],
                                  _padded(expected, LENGTHS["inputs"]))


def test_unknown_task_and_split_errors():
  with pytest.raises(ValueError, match=r"Unknown task 'no_such_task'.*stdlib_docstrings.*xsum"):
    pipeline.get_batches("no_such_task", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=False, seed=0)
  with pytest.raises(ValueError, match=r"no split 'dev'.*validation"):
    pipeline.get_examples("stdlib_docstrings", "dev", num_examples=1, feature_lengths=LENGTHS)
  with pytest.raises(ValueError, match="feature_lengths"):
    pipeline.get_batches("stdlib_docstrings", "train", feature_lengths={"inputs": 8},
                         batch_size=2, shuffle=False, seed=0)


def test_xsum_registration_touches_nothing(temp_task_names):
  def forbidden(*args, **kwargs):
    raise AssertionError(f"registration touched the outside world: {args}")
  with mock.patch.object(builtins, "open", forbidden), \
       mock.patch.object(io, "open", forbidden), \
       mock.patch.object(tf.io.gfile, "GFile", forbidden), \
       mock.patch.object(tf.io.gfile, "exists", forbidden), \
       mock.patch.object(tfds, "builder", forbidden), \
       mock.patch.object(socket.socket, "connect", forbidden):
    temp_task_names.append("xsum_probe")
    task = tasks.register_xsum_task("xsum_probe")
  assert task.source.tfds_dataset.name == "xsum:1.1.0"
  vocab = task.output_features["targets"].vocabulary
  assert vocab._model is None  # pylint: disable=protected-access  (T5's model was not read)


def test_xsum_missing_dataset_error(tmp_path, temp_task_names):
  temp_task_names.append("xsum_missing")
  tasks.register_xsum_task("xsum_missing", tfds_data_dir=str(tmp_path / "tfds"),
                           vocabulary_path=SEQIO_TEST_SPM)
  with pytest.raises(pipeline.MissingDatasetError) as err:
    pipeline.get_batches("xsum_missing", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=True, seed=0)
  message = str(err.value)
  assert "'xsum:1.1.0'" in message and "not prepared" in message
  assert "manual download" in message
  assert "xsum-extracts-from-downloads.tar.gz" in message
  assert "XSum-Dataset/README.md#running-the-download-and-extraction-scripts" in message
  assert f"put that file in {tmp_path / 'tfds'}/downloads/manual/" in message  # TFDS's manual_dir
  assert f"`tfds build xsum --data_dir {tmp_path / 'tfds'}`" in message
  assert message.endswith(".") and ". " not in message  # one sentence
  assert not os.path.exists(tmp_path / "tfds" / "downloads")  # nothing was downloaded


def test_xsum_through_tfds_mock(tmp_path, temp_task_names):
  temp_task_names.append("xsum_mock")
  tasks.register_xsum_task("xsum_mock", tfds_data_dir=str(tmp_path / "tfds"),
                           vocabulary_path=SEQIO_TEST_SPM)
  vocab = pipeline.get_vocabulary("xsum_mock")
  with tfds.testing.mock_data(num_examples=6):
    batches = list(pipeline.get_batches("xsum_mock", "validation", feature_lengths=LENGTHS,
                                        batch_size=2, shuffle=False, seed=None, repeat=False))
    examples = pipeline.get_examples("xsum_mock", "test", num_examples=2,
                                     feature_lengths=LENGTHS)
  assert len(batches) == 3
  for batch in batches:
    assert batch["encoder_input_tokens"].shape == (2, 64)
    assert batch["decoder_target_tokens"].shape == (2, 16)
    assert (batch["decoder_target_tokens"] == 1).sum() == 2  # one EOS per row
  prefix = vocab.encode("summarize:")
  np.testing.assert_array_equal(batches[0]["encoder_input_tokens"][:, :len(prefix)],
                                np.array([prefix, prefix]))
  assert len(examples) == 2
  assert all(ex["inputs_text"].startswith("summarize: ") for ex in examples)
  assert all(ex["targets_text"] for ex in examples)
