"""Your own prompt/completion files: JSONL and TSV, the template, the held-out split, the
vocabularies (SentencePiece and a Hugging Face tokenizer.json), the gin factory, every error."""
import hashlib
import json
import os

import gin
import numpy as np
import pytest
import seqio
import tokenizers

from irl_lm import config
from irl_lm.data import errors, local_files, pipeline, registry, sources
from irl_lm.models import t5
from tests.data import helpers
from tests.data import test_hf_tokenizer

LENGTHS = {"inputs": 24, "targets": 12}
RECORDS = [{"question": f"What is {i} + {i}?", "answer": str(2 * i), "id": i} for i in range(5)]
RECORDS.append({"question": "Is\u2028this one line?", "answer": 1, "id": 5})  # a number as text
TEMPLATE = "Question: {question}\nAnswer:"


def sha256_order(examples):
  """Indices of `examples` by the SHA-256 of their JSON (sorted keys), computed independently."""
  key = lambda i: hashlib.sha256(json.dumps(examples[i], sort_keys=True, ensure_ascii=False)
                                 .encode("utf-8")).digest()
  return sorted(range(len(examples)), key=key)


def expected_examples(records, template=TEMPLATE, completion="answer"):
  return [{"inputs": template.format(**r), "targets": str(r[completion])} for r in records]


@pytest.fixture()
def jsonl_path(tmp_path):
  path = tmp_path / "train.jsonl"  # UTF-8 as is (a raw U+2028 inside a JSON string)
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS),
                  encoding="utf-8")
  assert "\u2028" in path.read_text(encoding="utf-8")
  return str(path)


def test_jsonl_template_held_out_split_and_tokens(jsonl_path, temp_task_names):
  temp_task_names.append("lf_jsonl")
  local_files.register("lf_jsonl", train_path=jsonl_path, template=TEMPLATE,
                       completion_field="answer", vocabulary=helpers.STDLIB_SPM)
  assert pipeline.get_task("lf_jsonl").splits == ("train", "validation")
  examples = expected_examples(RECORDS)
  held = sha256_order(examples)[0]  # 6 // 50 = 0, so at least 1: the smallest SHA-256
  read = lambda split: pipeline.get_examples("lf_jsonl", split, num_examples=None,
                                             feature_lengths=LENGTHS)
  train, validation = read("train"), read("validation")
  assert [(e["inputs_text"], e["targets_text"]) for e in validation] == [
      (examples[held]["inputs"], examples[held]["targets"])]
  assert [(e["inputs_text"], e["targets_text"]) for e in train] == [
      (ex["inputs"], ex["targets"]) for i, ex in enumerate(examples) if i != held]
  assert train[0]["inputs_text"] == ("Question: What is 0 + 0?\nAnswer:" if held else
                                     "Question: What is 1 + 1?\nAnswer:")
  vocab = pipeline.get_vocabulary("lf_jsonl")
  for ex in train:  # EOS (1) after both, then padding (-1 for prompts: no real token)
    inputs = vocab.encode(ex["inputs_text"]) + [1]
    targets = vocab.encode(ex["targets_text"]) + [1]
    np.testing.assert_array_equal(ex["input_tokens"],
                                  inputs + [-1] * (LENGTHS["inputs"] - len(inputs)))
    np.testing.assert_array_equal(ex["target_tokens"],
                                  targets + [0] * (LENGTHS["targets"] - len(targets)))
  assert registry.metric_family("lf_jsonl") == "rouge"


def test_tsv_files_with_quoting_and_three_splits(tmp_path, temp_task_names):
  header = "text\tsummary\tnote"
  train = [header, '"a line\twith a tab"\tfirst\tx', '"two\nlines"\t"says ""hi"""\ty', "",
           "plain\tthird\tz"]
  helpers.write_lines(str(tmp_path / "train.tsv"), train)
  helpers.write_lines(str(tmp_path / "valid.tsv"), [header, "v\tvalid one\t-"])
  helpers.write_jsonl(str(tmp_path / "test.jsonl"), [{"text": "t", "summary": "test one"}])
  temp_task_names.append("lf_tsv")
  local_files.register("lf_tsv", train_path=str(tmp_path / "train.tsv"),
                       validation_path=str(tmp_path / "valid.tsv"),
                       test_path=str(tmp_path / "test.jsonl"), prompt_field="text",
                       completion_field="summary", template="summarize: {prompt}",
                       vocabulary="stdlib")
  assert pipeline.get_task("lf_tsv").splits == ("train", "validation", "test")
  texts = lambda split: [(e["inputs_text"], e["targets_text"]) for e in pipeline.get_examples(
      "lf_tsv", split, num_examples=None, feature_lengths=LENGTHS)]
  assert texts("train") == [("summarize: a line\twith a tab", "first"),
                            ("summarize: two\nlines", 'says "hi"'), ("summarize: plain", "third")]
  assert texts("validation") == [("summarize: v", "valid one")]  # nothing held out of train
  assert texts("test") == [("summarize: t", "test one")]  # mixed formats, from the extensions
  # A forced format overrides the extension.
  os.rename(tmp_path / "train.tsv", tmp_path / "train.txt")
  assert [e["targets"] for e in local_files.load_split(
      "train", train_path=str(tmp_path / "train.txt"), validation_path="v.tsv", format="tsv",
      prompt_field="text", completion_field="summary")] == ["first", 'says "hi"', "third"]


def test_hold_out_rule_and_train_subset(tmp_path, monkeypatch, temp_task_names):
  monkeypatch.setenv(sources.DATA_DIR_ENV_VAR, str(tmp_path))
  records = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(120)]
  helpers.write_jsonl(str(tmp_path / "mine" / "train.jsonl"), records)
  path = "{data_root}/mine/train.jsonl"
  examples = expected_examples(records, "{prompt}", "completion")
  order = sha256_order(examples)
  held = sorted(order[:2])  # 120 // 50 = 2
  load = lambda split: local_files.load_split(split, train_path=path)
  assert load("validation") == [examples[i] for i in held]
  assert load("train") == [ex for i, ex in enumerate(examples) if i not in held]
  # train_examples: the next smallest hashes among the remaining train examples (nested).
  temp_task_names.append("lf_subset")
  local_files.local_files_task("lf_subset", train_path=path, vocabulary="stdlib",
                               train_examples=3)
  subset = pipeline.get_examples("lf_subset", "train", num_examples=None,
                                 feature_lengths=LENGTHS)
  assert [e["inputs_text"] for e in subset] == [examples[i]["inputs"] for i in sorted(order[2:5])]


def test_hugging_face_tokenizer_through_the_t5_feature_converter(tmp_path, temp_task_names):
  ckpt = str(tmp_path / "ckpt")
  test_hf_tokenizer.train_bpe(ckpt, configs={"tokenizer_config.json": {"eos_token": "<|im_end|>"}})
  records = [{"prompt": "the cat", "completion": " sat on the mat"},
             {"prompt": "hello", "completion": " world"}]
  helpers.write_jsonl(str(tmp_path / "train.jsonl"), records)
  helpers.write_jsonl(str(tmp_path / "valid.jsonl"), records[:1])
  temp_task_names.append("lf_hf")
  local_files.register("lf_hf", train_path=str(tmp_path / "train.jsonl"),
                       validation_path=str(tmp_path / "valid.jsonl"), vocabulary=ckpt,
                       template="<|im_start|>{prompt}", inputs_eos=False)
  tok = tokenizers.Tokenizer.from_file(os.path.join(ckpt, "tokenizer.json"))
  eos = tok.token_to_id("<|im_end|>")
  assert eos == 3 and pipeline.get_vocabulary("lf_hf").eos_id == eos
  encode = lambda text: tok.encode(text, add_special_tokens=False).ids
  model = t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=tok.get_vocab_size()))
  batch = next(pipeline.get_batches("lf_hf", "train", feature_lengths=LENGTHS, batch_size=2,
                                    shuffle=False, seed=None, repeat=False,
                                    feature_converter=model.feature_converter(False)))
  pad = lambda ids, n: ids + [0] * (n - len(ids))
  inputs = [encode("<|im_start|>" + r["prompt"]) for r in records]  # no EOS after the prompt
  targets = [encode(r["completion"]) + [eos] for r in records]
  assert inputs[0][0] == 2  # the template's special token is one id
  np.testing.assert_array_equal(batch["encoder_input_tokens"],
                                [pad(i, LENGTHS["inputs"]) for i in inputs])
  np.testing.assert_array_equal(batch["decoder_target_tokens"],
                                [pad(t, LENGTHS["targets"]) for t in targets])
  np.testing.assert_array_equal(batch["decoder_input_tokens"],  # targets shifted right
                                [pad([0] + t, LENGTHS["targets"]) for t in targets])
  np.testing.assert_array_equal(batch["decoder_loss_weights"],
                                [pad([1] * len(t), LENGTHS["targets"]) for t in targets])
  assert [pipeline.get_vocabulary("lf_hf").decode(t) for t in batch["decoder_target_tokens"]] == [
      r["completion"] for r in records]


def test_gin_factory_records_settings_and_metric(jsonl_path, temp_task_names):
  temp_task_names.append("lf_gin")
  config.parse(["tasks/local_files.gin"], [
      "local_files_task.name = 'lf_gin'", f"local_files_task.train_path = '{jsonl_path}'",
      f"local_files_task.template = {TEMPLATE!r}", "local_files_task.completion_field = 'answer'",
      "local_files_task.vocabulary = 'stdlib'", "local_files_task.metric = 'gsm8k'",
      "local_files_task.inputs_eos = False"])
  assert gin.get_bindings("train")["task"] == "lf_gin"
  assert registry.metric_family("lf_gin") == "gsm8k"
  examples = pipeline.get_examples("lf_gin", "validation", num_examples=None,
                                   feature_lengths=LENGTHS)
  vocab = pipeline.get_vocabulary("lf_gin")
  text = examples[0]["inputs_text"]
  assert text.startswith("Question: What is ") and text.endswith("?\nAnswer:")
  ids = vocab.encode(text)  # inputs_eos = False: no EOS after the prompt
  np.testing.assert_array_equal(examples[0]["input_tokens"],
                                ids + [-1] * (LENGTHS["inputs"] - len(ids)))
  assert local_files.local_files_task("lf_gin", train_path=jsonl_path) == "lf_gin"
  assert registry.metric_family("lf_gin") == "rouge"  # the default family again


def _load(tmp_path, name, content, **settings):
  path = tmp_path / name
  path.write_text(content)
  return local_files.load_split(settings.pop("split", "train"), train_path=str(path),
                                **{"validation_path": "unused.jsonl", **settings})


@pytest.mark.parametrize("name,content,settings,error", [
    ("t.jsonl", '{"prompt": "p", "completion": "c"}\n{"prompt": "p", "completion": "c"\n', {},
     r"^line 2 of .*t.jsonl is not valid JSON \(.*\): write one JSON object per line"),
    ("t.jsonl", '\n["p", "c"]\n', {}, r"^line 2 of .*t.jsonl is a JSON list, not an object"),
    ("t.jsonl", '{"prompt": "p", "answer": "c"}\n', {},
     r"^line 1 of .*t.jsonl has no field 'completion' \(it has \['answer', 'prompt'\]\): add it, "
     r"or set local_files_task.completion_field"),
    ("t.jsonl", '{"prompt": "p", "completion": "c"}\n{"question": "q", "completion": "c"}\n', {},
     r"^template '\{prompt\}' names \{prompt\}, but line 2 of .*t.jsonl has no field 'prompt' "
     r"\(the prompt_field\) .*: fix local_files_task.template or prompt_field, or the file"),
    ("t.jsonl", '{"prompt": "p", "completion": "c"}\n', {"template": "Q: {question}"},
     r"^template 'Q: \{question\}' names \{question\}, but line 1 of .*t.jsonl has no field "
     r"'question' \(it has \['completion', 'prompt'\]\): fix local_files_task.template, or"),
    ("t.jsonl", '{"prompt": "p", "completion": "  "}\n', {},
     r"^line 1 of .*t.jsonl has an empty completion \('completion'\): give every record a "
     r"non-empty completion"),
    ("t.jsonl", '{"prompt": ["p"], "completion": "c"}\n', {},
     r"^field 'prompt' on line 1 of .*t.jsonl is \[\"p\"\], not text"),
    ("t.jsonl", "\n\n", {}, r"^.*t.jsonl holds no records"),
    ("t.tsv", "what is 2+2?\t4\n", {},
     r"^the first line of .*t.tsv, \['what is 2\+2\?', '4'\], does not name the column\(s\) "
     r"\['prompt', 'completion'\]: a TSV file's first line must be a header naming its columns"),
    ("t.tsv", "", {}, r"^.*t.tsv is empty or starts with a blank line: its first line must be "
                      r"a header"),
    ("t.tsv", "prompt\tcompletion\np\tc\textra\n", {},
     r"^line 2 of .*t.tsv has 3 column\(s\) but the header has 2"),
    ("t.tsv", "prompt\tcompletion\np\t\n", {}, r"^line 2 of .*t.tsv has an empty completion"),
    ("t.jsonl", '{"prompt": "p", "completion": "c"}\n', {"validation_path": None},
     r"^.*t.jsonl has only 1 example\(s\), too few to hold out a validation split: add "
     r"records, or set local_files_task.validation_path"),
    ("t.jsonl", '{"prompt": "p", "completion": "c"}\n', {"split": "test"},
     r"^task 'local_files' has no split 'test': use one of \('train', 'validation'\) \(a test "
     r"split needs local_files_task.test_path\)"),
], ids=["invalid_json", "not_an_object", "no_completion", "no_prompt_field", "template_field",
        "empty_completion", "not_text", "no_records", "tsv_without_header", "tsv_empty",
        "tsv_columns", "tsv_empty_completion", "too_few_to_hold_out", "no_test_split"])
def test_bad_files_are_explained(tmp_path, name, content, settings, error):
  with pytest.raises(ValueError, match=error) as e:
    _load(tmp_path, name, content, **settings)
  assert str(e.value).endswith(".") and "\n" not in str(e.value).replace("\\n", "")


@pytest.mark.parametrize("settings,error", [
    ({"train_path": "t.csv"}, r"^cannot tell the format of t.csv from its extension: name the "
                              r"file .jsonl or .tsv, or set local_files_task.format"),
    ({"train_path": "t.jsonl", "format": "csv"},
     r"^unknown format 'csv' for t.jsonl: set local_files_task.format to 'jsonl' or 'tsv'"),
    ({"test_path": "t.json"}, r"^cannot tell the format of t.json"),
    ({"template": "Q: {question"}, r"^template 'Q: \{question' is not a valid str.format"),
    ({"template": "Q: {}"}, r"^template 'Q: \{\}' has a positional field \{\}: name the"),
    ({"metric": "exact_match"}, r"^local_files_task.metric 'exact_match' is not one of"),
    ({"completion_field": ""}, r"^local_files_task.completion_field must be a field name"),
], ids=["extension", "format", "test_extension", "template_syntax", "template_positional",
        "metric", "completion_field"])
def test_bad_settings_fail_in_the_factory_before_any_file_is_read(settings, error):
  with pytest.raises(ValueError, match=error):
    local_files.local_files_task("lf_bad", **settings)
  assert "lf_bad" not in registry.known_names()
  with pytest.raises(ValueError, match=error):
    local_files.register("lf_bad", **{"train_path": "t.jsonl", **settings})


def test_missing_files_and_unloadable_tokenizer_through_the_pipeline(tmp_path, monkeypatch,
                                                                     jsonl_path,
                                                                     temp_task_names):
  monkeypatch.setenv(sources.DATA_DIR_ENV_VAR, str(tmp_path / "root"))
  converter = seqio.EncDecFeatureConverter(pack=False)
  batches = lambda name, split="train": pipeline.get_batches(
      name, split, feature_lengths=LENGTHS, batch_size=1, shuffle=False, seed=None,
      feature_converter=converter)
  temp_task_names.append("lf_missing")
  local_files.register("lf_missing", vocabulary="stdlib")  # the default train path
  default = str(tmp_path / "root" / "local_files" / "train.jsonl")
  with pytest.raises(errors.MissingDatasetError,
                     match=rf"^The train split of task 'lf_missing' needs {default}, which does "
                           r"not exist: put your train file \(.jsonl or .tsv\) there, or set "
                           r"local_files_task.train_path to it\.$"):
    batches("lf_missing")
  assert not os.path.exists(tmp_path / "root")
  temp_task_names.append("lf_missing_test")
  local_files.register("lf_missing_test", train_path=jsonl_path, test_path="{data_root}/t.tsv",
                       completion_field="answer", template=TEMPLATE, vocabulary="stdlib")
  with pytest.raises(errors.MissingDatasetError, match=r"test split of task 'lf_missing_test' "
                                                       r"needs .*root/t.tsv, which does not exist: "
                                                       r"fix local_files_task.test_path\.$"):
    batches("lf_missing_test", "test")
  (tmp_path / "broken.json").write_text('{"model": 3}')
  temp_task_names.append("lf_broken_tok")
  local_files.register("lf_broken_tok", train_path=jsonl_path, completion_field="answer",
                       template=TEMPLATE, vocabulary=str(tmp_path / "broken.json"))
  with pytest.raises(ValueError, match=r"broken.json cannot be loaded as a Hugging Face "
                                       r"tokenizer"):
    next(batches("lf_broken_tok"))


def test_registration_reads_nothing(tmp_path, temp_task_names):
  test_hf_tokenizer.train_bpe(str(tmp_path / "ckpt"))
  with helpers.outside_world_forbidden():
    task = local_files.register("lf_probe", train_path=str(tmp_path / "nope.tsv"),
                                vocabulary=str(tmp_path / "ckpt"))
  temp_task_names.append(task.name)
  vocabulary = task.output_features["targets"].vocabulary
  assert vocabulary._tokenizer is None  # pylint: disable=protected-access
