"""XSum through TFDS (never downloaded): registration, the missing-data message, mock data."""
import os

import numpy as np
import seqio
import pytest
import tensorflow_datasets as tfds

from irl_lm.data import pipeline
from irl_lm.data import xsum
from tests.data import helpers

LENGTHS = {"inputs": 64, "targets": 16}


def test_xsum_registration_touches_nothing(temp_task_names):
  with helpers.outside_world_forbidden():
    temp_task_names.append("xsum_probe")
    task = xsum.register("xsum_probe")
  assert task.source.tfds_dataset.name == "xsum:1.1.0"
  vocab = task.output_features["targets"].vocabulary
  assert vocab._model is None  # pylint: disable=protected-access  (T5's model was not read)


def test_xsum_missing_dataset_error(tmp_path, temp_task_names):
  temp_task_names.append("xsum_missing")
  xsum.register("xsum_missing", tfds_data_dir=str(tmp_path / "tfds"),
                vocabulary_path=helpers.seqio_test_spm())
  with pytest.raises(pipeline.MissingDatasetError) as err:
    pipeline.get_batches("xsum_missing", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=True, seed=0,
        feature_converter=seqio.EncDecFeatureConverter(pack=False))
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
  xsum.register("xsum_mock", tfds_data_dir=str(tmp_path / "tfds"),
                vocabulary_path=helpers.seqio_test_spm())
  vocab = pipeline.get_vocabulary("xsum_mock")
  with tfds.testing.mock_data(num_examples=6):
    batches = list(pipeline.get_batches("xsum_mock", "validation", feature_lengths=LENGTHS,
                                        batch_size=2, shuffle=False, seed=None, repeat=False,
        feature_converter=seqio.EncDecFeatureConverter(pack=False)))
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


def test_xsum_train_subset_is_tfds_slice(tmp_path, temp_task_names):
  """train_examples reads TFDS's ``train[:N]``; the other splits stay whole."""
  temp_task_names.append("xsum_sub")
  task = xsum.register("xsum_sub", tfds_data_dir=str(tmp_path / "tfds"),
                       vocabulary_path=helpers.seqio_test_spm(), train_examples=3)
  split_map = task.source.tfds_dataset._split_map  # pylint: disable=protected-access
  assert split_map == {"train": "train[:3]", "validation": "validation", "test": "test"}
  assert set(task.splits) == {"train", "validation", "test"}
  with pytest.raises(ValueError, match="train_examples must be a whole number >= 1"):
    xsum.xsum_task("xsum_bad", train_examples=0)
