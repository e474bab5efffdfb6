"""TL;DR from the OpenAI JSON lines (tiny files the tests write) and TFDS (mock data)."""
import pytest
import seqio
import tensorflow_datasets as tfds

from irl_lm.data import errors, pipeline, tldr
from tests.data import helpers

LENGTHS = {"inputs": 64, "targets": 48}


def test_tldr_openai_jsonl(tmp_path, temp_task_names):
  records = [{"id": "t3_1", "subreddit": "tifu", "title": "TIFU by cooking",
              "post": "I burnt the pasta.", "summary": " burnt pasta, ate toast"},
             {"id": "t3_2", "subreddit": "relationships", "title": "Help",
              "post": "My cat ignores me.", "summary": " cat ignores me"}]
  helpers.write_jsonl(str(tmp_path / "valid.jsonl"), records)
  temp_task_names += ["tldr_t", "tldr_title"]
  tldr.register_openai("tldr_t", data_dir=str(tmp_path), vocabulary_path=helpers.STDLIB_SPM)
  examples = pipeline.get_examples("tldr_t", "validation", num_examples=None,
                                   feature_lengths=LENGTHS)
  assert [ex["inputs_text"] for ex in examples] == ["summarize: I burnt the pasta.",
                                                    "summarize: My cat ignores me."]
  assert [ex["targets_text"] for ex in examples] == ["burnt pasta, ate toast", "cat ignores me"]
  tldr.register_openai("tldr_title", data_dir=str(tmp_path),
                       input_template="summarize: r/{subreddit} {title}: {post}",
                       vocabulary_path=helpers.STDLIB_SPM)
  examples = pipeline.get_examples("tldr_title", "validation", num_examples=1,
                                   feature_lengths=LENGTHS)
  assert examples[0]["inputs_text"] == "summarize: r/tifu TIFU by cooking: I burnt the pasta."
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['body'\]"):
    tldr.check_template("summarize: {body}")
  with pytest.raises(errors.MissingDatasetError, match=r"tldr_3_filtered/train.jsonl to .*"):
    tldr.load_split("train", str(tmp_path))


def test_tldr_tfds_through_mock_data(tmp_path, temp_task_names):
  temp_task_names.append("tldr_mock")
  tldr.register_tfds("tldr_mock", tfds_data_dir=str(tmp_path / "tfds"),
                     vocabulary_path=helpers.seqio_test_spm())
  with tfds.testing.mock_data(num_examples=4):
    batches = list(pipeline.get_batches("tldr_mock", "validation", feature_lengths=LENGTHS,
                                        batch_size=2, shuffle=False, seed=None, repeat=False,
        feature_converter=seqio.EncDecFeatureConverter(pack=False)))
    examples = pipeline.get_examples("tldr_mock", "test", num_examples=2,
                                     feature_lengths=LENGTHS)
  assert len(batches) == 2 and (batches[0]["decoder_target_tokens"] == 1).sum() == 2
  assert all(ex["inputs_text"].startswith("summarize: ") for ex in examples)
  with pytest.raises(errors.MissingDatasetError) as err:
    pipeline.get_batches("tldr_mock", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=False, seed=None,
        feature_converter=seqio.EncDecFeatureConverter(pack=False))
  assert (f"run `tfds build reddit_tifu/long_split --data_dir {tmp_path / 'tfds'}`"
          in str(err.value))
