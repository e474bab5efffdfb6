"""The paper's tasks through their real loaders, on tiny files the tests write (never the network).

GSM8k and the OpenAI TL;DR from JSON lines, WMT22 en-de from TSV and sacrebleu's local layout
(text files and raw XML), TL;DR from TFDS through ``tfds.testing.mock_data``, the gin task
factories, and the missing-data messages.
"""
import json
import os

import gin
import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from irl_lm import config
from irl_lm.data import errors, gsm8k, pipeline, sources, task_configs, tasks, tldr, vocabularies

LENGTHS = {"inputs": 64, "targets": 48}
STDLIB_SPM = vocabularies.STDLIB_VOCAB_PATH  # stands in for T5's (not available offline)
SEQIO_TEST_SPM = os.path.join(os.path.dirname(seqio.__file__), "test_data", "sentencepiece",
                              "sentencepiece.model")

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


def _write_jsonl(path, records):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")


@pytest.fixture()
def temp_task_names():
  """Task names registered by a test; removed from the registry afterwards."""
  names = []
  yield names
  for name in names:
    if name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(name)
    tasks.TASK_METRICS.pop(name, None)
    tasks.APPLIED_SETTINGS.pop(name, None)
    task_configs._PENDING.pop(name, None)  # pylint: disable=protected-access


@pytest.fixture()
def gsm8k_dir(tmp_path):
  _write_jsonl(str(tmp_path / "gsm8k" / "train.jsonl"), GSM8K_TRAIN)
  _write_jsonl(str(tmp_path / "gsm8k" / "test.jsonl"), GSM8K_TEST)
  return str(tmp_path / "gsm8k")


def test_all_tasks_registered_with_metric_families():
  assert set(tasks.TASK_NAMES) == {"stdlib_docstrings", "xsum", "tldr", "tldr_openai", "gsm8k",
                                   "wmt22_en_de", "arithmetic_word_problems"}
  assert {n: tasks.metric_family(n) for n in tasks.TASK_NAMES} == {
      "stdlib_docstrings": "rouge", "xsum": "rouge", "tldr": "rouge", "tldr_openai": "rouge",
      "gsm8k": "gsm8k", "wmt22_en_de": "translation", "arithmetic_word_problems": "gsm8k"}
  for name in ("xsum", "tldr", "tldr_openai", "gsm8k", "wmt22_en_de"):  # T5's vocabulary, unread
    vocab = pipeline.get_vocabulary(name)
    assert vocab.sentencepiece_model_file == vocabularies.T5_VOCAB_PATH
    assert vocab.extra_ids == 100 and vocab._model is None  # pylint: disable=protected-access
  assert pipeline.get_vocabulary("arithmetic_word_problems").vocab_size == 4096
  assert pipeline.get_task("gsm8k").splits == ("train", "test")
  assert pipeline.get_task("wmt22_en_de").splits == ("train", "validation", "test")


def test_gsm8k_from_jsonl(gsm8k_dir, temp_task_names):
  temp_task_names.append("gsm8k_t")
  tasks.register_gsm8k_task("gsm8k_t", data_dir=gsm8k_dir, vocabulary_path=STDLIB_SPM)
  train = pipeline.get_examples("gsm8k_t", "train", num_examples=None, feature_lengths=LENGTHS)
  assert [ex["inputs_text"] for ex in train] == [r["question"] for r in GSM8K_TRAIN]
  # Targets keep the worked solution, its calculator annotations and the final answer line.
  assert [ex["targets_text"] for ex in train] == [r["answer"] for r in GSM8K_TRAIN]
  vocab = pipeline.get_vocabulary("gsm8k_t")
  expected = vocab.encode(GSM8K_TRAIN[0]["answer"])[:LENGTHS["targets"] - 1] + [1]
  np.testing.assert_array_equal(train[0]["decoder_target_tokens"][:len(expected)], expected)
  test = pipeline.get_examples("gsm8k_t", "test", num_examples=None, feature_lengths=LENGTHS)
  assert [ex["targets_text"] for ex in test] == [GSM8K_TEST[0]["answer"]]
  assert [r["final_answer"] for r in gsm8k.load_split("train", gsm8k_dir)] == ["72", "10",
                                                                                "1,234"]
  batch = next(pipeline.get_batches("gsm8k_t", "train", feature_lengths=LENGTHS, batch_size=2,
                                    shuffle=True, seed=0))
  assert batch["decoder_target_tokens"].shape == (2, LENGTHS["targets"])

  # A held-out validation split: the last N train problems.
  temp_task_names.append("gsm8k_v")
  tasks.register_gsm8k_task("gsm8k_v", data_dir=gsm8k_dir, validation_size=1,
                            vocabulary_path=STDLIB_SPM)
  split = lambda s: [ex["inputs_text"] for ex in pipeline.get_examples(
      "gsm8k_v", s, num_examples=None, feature_lengths=LENGTHS)]
  assert split("train") == [r["question"] for r in GSM8K_TRAIN[:2]]
  assert split("validation") == [GSM8K_TRAIN[2]["question"]]
  with pytest.raises(ValueError, match="no split 'validation'"):
    gsm8k.load_split("validation", gsm8k_dir)


def test_gsm8k_missing_and_malformed_files(tmp_path, monkeypatch, temp_task_names):
  monkeypatch.setenv(sources.DATA_DIR_ENV_VAR, str(tmp_path / "root"))
  temp_task_names.append("gsm8k_missing")
  tasks.register_gsm8k_task("gsm8k_missing", vocabulary_path=STDLIB_SPM)  # default data dir
  with pytest.raises(errors.MissingDatasetError) as err:
    pipeline.get_batches("gsm8k_missing", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=False, seed=None)
  message = str(err.value)
  path = str(tmp_path / "root" / "gsm8k" / "train.jsonl")
  assert f"needs {path}, which does not exist" in message
  assert ("https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/"
          "data/train.jsonl") in message
  assert "gsm8k_task.data_dir" in message and message.endswith(".")
  assert not os.path.exists(tmp_path / "root")  # nothing created, nothing downloaded
  bad = tmp_path / "bad"
  _write_jsonl(str(bad / "train.jsonl"), [{"question": "q"}])
  with pytest.raises(ValueError,
                     match=r"line 1 of .*train.jsonl lacks the field\(s\) \['answer'\]"):
    gsm8k.load_split("train", str(bad))


def test_gin_factory_points_a_task_at_its_data(gsm8k_dir, temp_task_names):
  temp_task_names.append("gsm8k_gin")
  config.parse(["tasks/gsm8k.gin"], [
      "gsm8k_task.name = 'gsm8k_gin'", f"gsm8k_task.data_dir = '{gsm8k_dir}'",
      f"gsm8k_task.vocabulary_path = '{STDLIB_SPM}'"])
  assert gin.get_bindings("train")["task"] == "gsm8k_gin"  # the reference registers the task
  task = pipeline.get_task("gsm8k_gin")
  examples = pipeline.get_examples("gsm8k_gin", "test", num_examples=None,
                                   feature_lengths=LENGTHS)
  assert [ex["inputs_text"] for ex in examples] == [GSM8K_TEST[0]["question"]]
  # The same settings again keep the task; other settings re-register it.
  assert task_configs.gsm8k_task("gsm8k_gin", data_dir=gsm8k_dir,
                                 vocabulary_path=STDLIB_SPM) == "gsm8k_gin"
  assert pipeline.get_task("gsm8k_gin") is task
  task_configs.gsm8k_task("gsm8k_gin", data_dir=gsm8k_dir, validation_size=1,
                          vocabulary_path=STDLIB_SPM)
  assert pipeline.get_task("gsm8k_gin") is not task
  assert pipeline.get_task("gsm8k_gin").splits == ("train", "validation", "test")


def test_tldr_openai_jsonl(tmp_path, temp_task_names):
  records = [{"id": "t3_1", "subreddit": "tifu", "title": "TIFU by cooking",
              "post": "I burnt the pasta.", "summary": " burnt pasta, ate toast"},
             {"id": "t3_2", "subreddit": "relationships", "title": "Help",
              "post": "My cat ignores me.", "summary": " cat ignores me"}]
  _write_jsonl(str(tmp_path / "valid.jsonl"), records)
  temp_task_names += ["tldr_t", "tldr_title"]
  tasks.register_tldr_openai_task("tldr_t", data_dir=str(tmp_path), vocabulary_path=STDLIB_SPM)
  examples = pipeline.get_examples("tldr_t", "validation", num_examples=None,
                                   feature_lengths=LENGTHS)
  assert [ex["inputs_text"] for ex in examples] == ["summarize: I burnt the pasta.",
                                                    "summarize: My cat ignores me."]
  assert [ex["targets_text"] for ex in examples] == ["burnt pasta, ate toast", "cat ignores me"]
  tasks.register_tldr_openai_task("tldr_title", data_dir=str(tmp_path),
                                  input_template="summarize: r/{subreddit} {title}: {post}",
                                  vocabulary_path=STDLIB_SPM)
  examples = pipeline.get_examples("tldr_title", "validation", num_examples=1,
                                   feature_lengths=LENGTHS)
  assert examples[0]["inputs_text"] == "summarize: r/tifu TIFU by cooking: I burnt the pasta."
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['body'\]"):
    tldr.check_template("summarize: {body}")
  with pytest.raises(errors.MissingDatasetError, match=r"tldr_3_filtered/train.jsonl to .*"):
    tldr.load_split("train", str(tmp_path))


def test_tldr_tfds_through_mock_data(tmp_path, temp_task_names):
  temp_task_names.append("tldr_mock")
  tasks.register_tldr_task("tldr_mock", tfds_data_dir=str(tmp_path / "tfds"),
                           vocabulary_path=SEQIO_TEST_SPM)
  with tfds.testing.mock_data(num_examples=4):
    batches = list(pipeline.get_batches("tldr_mock", "validation", feature_lengths=LENGTHS,
                                        batch_size=2, shuffle=False, seed=None, repeat=False))
    examples = pipeline.get_examples("tldr_mock", "test", num_examples=2,
                                     feature_lengths=LENGTHS)
  assert len(batches) == 2 and (batches[0]["decoder_target_tokens"] == 1).sum() == 2
  assert all(ex["inputs_text"].startswith("summarize: ") for ex in examples)
  with pytest.raises(errors.MissingDatasetError) as err:
    pipeline.get_batches("tldr_mock", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=False, seed=None)
  assert (f"run `tfds build reddit_tifu/long_split --data_dir {tmp_path / 'tfds'}`"
          in str(err.value))


def _write_lines(path, lines):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


WMT21_XML = """<?xml version="1.0" encoding="utf-8"?>
<dataset id="newstest2021">
 <collection id="general">
  <doc id="doc1" origlang="en">
   <src lang="en"><p><seg id="1">Good  morning.</seg><seg id="2">Thank you.</seg></p></src>
   <ref lang="de" translator="A"><p><seg id="1">Guten Morgen.</seg><seg id="2">Danke.</seg></p>
   </ref>
  </doc>
 </collection>
</dataset>
"""


def test_wmt22_en_de_tsv_and_sacrebleu_layout(tmp_path, temp_task_names):
  # Training TSV with German first (as news-commentary's de-en files), a short line and an
  # empty side, both skipped.
  _write_lines(str(tmp_path / "train" / "nc.de-en.tsv"),
               ["Hallo Welt.\tHello world.", "kaputt", "\tonly English", "Danke.\tThanks."])
  sacre = tmp_path / "sacrebleu"
  _write_lines(str(sacre / "wmt22" / "wmt22.en-de.src"), ["The cat.", "A  dog ran."])
  _write_lines(str(sacre / "wmt22" / "wmt22.en-de.ref-A"), ["Die Katze.", "Ein Hund lief."])
  with open(sacre / "wmt22" / "wmt22.en-de.ref-B", "w") as f:
    f.write("wrong reference\nwrong\n")
  # wmt21 only as sacrebleu's unpacked raw XML, parsed offline with sacrebleu's reader.
  xml_path = sacre / "wmt21" / "raw" / "test" / "newstest2021.en-de.xml"
  os.makedirs(xml_path.parent)
  xml_path.write_text(WMT21_XML)
  temp_task_names.append("wmt_t")
  tasks.register_wmt22_en_de_task("wmt_t", train_files=[str(tmp_path / "train" / "*.tsv")],
                                  sacrebleu_dir=str(sacre), tsv_columns=(1, 0),
                                  vocabulary_path=STDLIB_SPM)
  text = lambda split: [(ex["inputs_text"], ex["targets_text"]) for ex in pipeline.get_examples(
      "wmt_t", split, num_examples=None, feature_lengths=LENGTHS)]
  prefix = "translate English to German: "
  assert text("train") == [(prefix + "Hello world.", "Hallo Welt."),
                           (prefix + "Thanks.", "Danke.")]
  assert text("test") == [(prefix + "The cat.", "Die Katze."),
                          (prefix + "A dog ran.", "Ein Hund lief.")]  # sacrebleu's cleaning
  assert text("validation") == [(prefix + "Good morning.", "Guten Morgen."),
                                (prefix + "Thank you.", "Danke.")]
  batches = pipeline.get_batches("wmt_t", "train", feature_lengths=LENGTHS, batch_size=2,
                                 shuffle=True, seed=1)
  assert next(batches)["encoder_input_tokens"].shape == (2, LENGTHS["inputs"])


def test_wmt22_missing_data_messages(tmp_path, temp_task_names):
  temp_task_names.append("wmt_missing")
  tasks.register_wmt22_en_de_task("wmt_missing", train_files=[str(tmp_path / "none.tsv")],
                                  sacrebleu_dir=str(tmp_path / "sb"), vocabulary_path=STDLIB_SPM)
  with pytest.raises(errors.MissingDatasetError) as err:
    pipeline.get_examples("wmt_missing", "test", num_examples=1, feature_lengths=LENGTHS)
  message = str(err.value)
  assert f"needs {tmp_path / 'sb' / 'wmt22' / 'wmt22.en-de.src'}" in message
  assert "`sacrebleu -t wmt22 -l en-de --echo src > /dev/null`" in message
  with pytest.raises(errors.MissingDatasetError, match=r"none\.tsv.*tsv_columns = \(1, 0\)"):
    pipeline.get_batches("wmt_missing", "train", feature_lengths=LENGTHS, batch_size=2,
                         shuffle=True, seed=0)
  assert not os.path.exists(tmp_path / "sb")


@pytest.mark.parametrize("register", [
    lambda: tasks.register_gsm8k_task("probe_gsm8k", data_dir="/nonexistent"),
    lambda: tasks.register_tldr_openai_task("probe_tldr_openai", data_dir="/nonexistent"),
    lambda: tasks.register_tldr_task("probe_tldr"),
    lambda: tasks.register_wmt22_en_de_task("probe_wmt", train_files=["/nonexistent/*.tsv"]),
    lambda: tasks.register_arithmetic_task("probe_arithmetic"),
], ids=["gsm8k", "tldr_openai", "tldr", "wmt22_en_de", "arithmetic"])
def test_registration_touches_nothing(register, temp_task_names):
  import builtins, io, socket  # pylint: disable=g-import-not-at-top,multiple-imports
  from unittest import mock  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def forbidden(*args, **kwargs):
    raise AssertionError(f"registration touched the outside world: {args}")
  with mock.patch.object(builtins, "open", forbidden), \
       mock.patch.object(io, "open", forbidden), \
       mock.patch.object(tf.io.gfile, "GFile", forbidden), \
       mock.patch.object(tf.io.gfile, "exists", forbidden), \
       mock.patch.object(tf.io.gfile, "glob", forbidden), \
       mock.patch.object(tfds, "builder", forbidden), \
       mock.patch.object(socket.socket, "connect", forbidden):
    task = register()
  temp_task_names.append(task.name)
  vocabulary = task.output_features["targets"].vocabulary
  assert vocabulary._model is None  # pylint: disable=protected-access
