"""GSM8k from its JSON lines (tiny files the tests write), its gin factory, missing data."""
import os

import gin
import numpy as np
import seqio
import pytest

from irl_lm import config
from irl_lm.data import errors, gsm8k, pipeline, sources
from tests.data import helpers

LENGTHS = {"inputs": 64, "targets": 48}

GSM8K_TRAIN = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
                 "many clips in May. How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
               "<<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
                 "babysitting. How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she "
               "earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
    {"question": "What is 1,000 + 234?", "answer": "1,000 + 234 = <<1000+234=1234>>1,234\n"
                                                   "#### 1,234"},
]
GSM8K_TEST = [{"question": "What is 2 + 3?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}]


@pytest.fixture()
def gsm8k_dir(tmp_path):
  helpers.write_jsonl(str(tmp_path / "gsm8k" / "train.jsonl"), GSM8K_TRAIN)
  helpers.write_jsonl(str(tmp_path / "gsm8k" / "test.jsonl"), GSM8K_TEST)
  return str(tmp_path / "gsm8k")


def test_gsm8k_from_jsonl(gsm8k_dir, temp_task_names):
  temp_task_names.append("gsm8k_t")
  gsm8k.register("gsm8k_t", data_dir=gsm8k_dir, vocabulary_path=helpers.STDLIB_SPM)
  train = pipeline.get_examples("gsm8k_t", "train", num_examples=None, feature_lengths=LENGTHS)
  assert [ex["inputs_text"] for ex in train] == [r["question"] for r in GSM8K_TRAIN]
  # Targets keep the worked solution, its calculator annotations and the final answer line.
  assert [ex["targets_text"] for ex in train] == [r["answer"] for r in GSM8K_TRAIN]
  vocab = pipeline.get_vocabulary("gsm8k_t")
  expected = vocab.encode(GSM8K_TRAIN[0]["answer"])[:LENGTHS["targets"] - 1] + [1]
  np.testing.assert_array_equal(train[0]["target_tokens"][:len(expected)], expected)
  test = pipeline.get_examples("gsm8k_t", "test", num_examples=None, feature_lengths=LENGTHS)
  assert [ex["targets_text"] for ex in test] == [GSM8K_TEST[0]["answer"]]
  assert [r["final_answer"] for r in gsm8k.load_split("train", gsm8k_dir)] == ["72", "10",
                                                                                "1,234"]
  batch = next(pipeline.get_batches("gsm8k_t", "train", feature_lengths=LENGTHS, batch_size=2,
                                    shuffle=True, seed=0,
        feature_converter=seqio.EncDecFeatureConverter(pack=False)))
  assert batch["decoder_target_tokens"].shape == (2, LENGTHS["targets"])

  # A held-out validation split: the last N train problems.
  temp_task_names.append("gsm8k_v")
  gsm8k.register("gsm8k_v", data_dir=gsm8k_dir, validation_size=1,
                 vocabulary_path=helpers.STDLIB_SPM)
  split = lambda s: [ex["inputs_text"] for ex in pipeline.get_examples(
      "gsm8k_v", s, num_examples=None, feature_lengths=LENGTHS)]
  assert split("train") == [r["question"] for r in GSM8K_TRAIN[:2]]
  assert split("validation") == [GSM8K_TRAIN[2]["question"]]
  with pytest.raises(ValueError, match="no split 'validation'"):
    gsm8k.load_split("validation", gsm8k_dir)


def test_gsm8k_missing_and_malformed_files(tmp_path, monkeypatch, temp_task_names):
  monkeypatch.setenv(sources.DATA_DIR_ENV_VAR, str(tmp_path / "root"))
  temp_task_names.append("gsm8k_missing")
  gsm8k.register("gsm8k_missing", vocabulary_path=helpers.STDLIB_SPM)  # default data dir
  with pytest.raises(errors.MissingDatasetError) as err:
    pipeline.get_batches("gsm8k_missing", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=False, seed=None,
        feature_converter=seqio.EncDecFeatureConverter(pack=False))
  message = str(err.value)
  path = str(tmp_path / "root" / "gsm8k" / "train.jsonl")
  assert f"needs {path}, which does not exist" in message
  assert ("https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/"
          "data/train.jsonl") in message
  assert "gsm8k_task.data_dir" in message and message.endswith(".")
  assert not os.path.exists(tmp_path / "root")  # nothing created, nothing downloaded
  bad = tmp_path / "bad"
  helpers.write_jsonl(str(bad / "train.jsonl"), [{"question": "q"}])
  with pytest.raises(ValueError,
                     match=r"line 1 of .*train.jsonl lacks the field\(s\) \['answer'\]"):
    gsm8k.load_split("train", str(bad))


def test_gin_factory_points_a_task_at_its_data(gsm8k_dir, temp_task_names):
  temp_task_names.append("gsm8k_gin")
  config.parse(["tasks/gsm8k.gin"], [
      "gsm8k_task.name = 'gsm8k_gin'", f"gsm8k_task.data_dir = '{gsm8k_dir}'",
      f"gsm8k_task.vocabulary_path = '{helpers.STDLIB_SPM}'"])
  assert gin.get_bindings("train")["task"] == "gsm8k_gin"  # the reference registers the task
  task = pipeline.get_task("gsm8k_gin")
  examples = pipeline.get_examples("gsm8k_gin", "test", num_examples=None,
                                   feature_lengths=LENGTHS)
  assert [ex["inputs_text"] for ex in examples] == [GSM8K_TEST[0]["question"]]
  # The same settings again keep the task; other settings re-register it.
  assert gsm8k.gsm8k_task("gsm8k_gin", data_dir=gsm8k_dir,
                          vocabulary_path=helpers.STDLIB_SPM) == "gsm8k_gin"
  assert pipeline.get_task("gsm8k_gin") is task
  gsm8k.gsm8k_task("gsm8k_gin", data_dir=gsm8k_dir, validation_size=1,
                   vocabulary_path=helpers.STDLIB_SPM)
  assert pipeline.get_task("gsm8k_gin") is not task
  assert pipeline.get_task("gsm8k_gin").splits == ("train", "validation", "test")
