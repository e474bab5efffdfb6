"""Evaluate mode end to end: a short training run on a tiny GSM8k JSONL, then `run.mode =
'evaluate'` through gin with greedy, greedy + calculator, beam search, a temperature and Self-BLEU
samples; every number in the output files is checked against an independent recomputation."""
import dataclasses
import json
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm import config, errors, runner
from irl_lm.jobs import common
from irl_lm.jobs import train as train_job
from irl_lm.jobs.evaluate import EvaluateSettings
from irl_lm.data import pipeline, registry, vocabularies
from irl_lm.data import calculator
from irl_lm.jobs import evaluate as evaluate_job
from irl_lm.decoding import config as decoding_config
from irl_lm.evaluation import metrics, predict, rewards
from irl_lm.losses import soft_q
from irl_lm.checkpoints import manager as checkpoints
from irl_lm.partitioning import Partitioner
from irl_lm.training.settings import RunSettings, TrainSettings

TASK = "gsm8k_evaluate_e2e"
STEPS = 80
LENGTHS = {"inputs": 16, "targets": 24}
# Train and test are the same problems; the last annotation is wrong on purpose (7*8 = 54), so
# the model learns to write it and the calculator must overrule it.
PROBLEMS = [("What is 2+3?", "2+3 = <<2+3=5>>5\n#### 5"),
            ("What is 4*6?", "4*6 = <<4*6=24>>24\n#### 24"),
            ("What is 9-7?", "9-7 = <<9-7=2>>2\n#### 2"),
            ("What is 7*8?", "7*8 = <<7*8=54>>54\n#### 54")]
GIN_FILES = ["models/t5_1_1_tiny.gin", "methods/iqlearn.gin", "tasks/gsm8k.gin",
             "meshes/cpu.gin"]
SETTINGS = ["greedy", "greedy_calc", "beam2"]


def _bindings(data_dir: str, run_dir: str) -> list[str]:
  return [
      # The stdlib model + T5's 100 sentinels (4196 ids) stands in for T5's vocabulary.
      "t5_1_1_config.vocab_size = 4224", f"gsm8k_task.name = '{TASK}'",
      f"gsm8k_task.data_dir = '{data_dir}'",
      f"gsm8k_task.vocabulary_path = '{vocabularies.STDLIB_VOCAB_PATH}'",
      f"train.feature_lengths = {LENGTHS}", "TrainSettings.batch_size = 8",
      f"TrainSettings.num_train_steps = {STEPS}", "TrainSettings.optimizer = @make_optimizer",
      "make_optimizer.name = 'adamw'", "TrainSettings.schedule = @make_schedule",
      "make_schedule.name = 'constant'", "make_schedule.learning_rate = 3e-3",
      "IQLearn.td_weight = 0.1", "IQLearn.gamma = 0.9",
      "EvalSettings.examples = 0", "TrainSettings.tensorboard = False",
      f"CheckpointSettings.every = {STEPS}",
      f"TrainSettings.log_every = {STEPS // 2}", f"run.run_dir = '{run_dir}'"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
  """Trains 80 steps (one device), then evaluates through gin's run.mode = 'evaluate'."""
  root = tmp_path_factory.mktemp("evaluate_e2e")
  data_dir, run_dir = str(root / "gsm8k"), str(root / "run")
  os.makedirs(data_dir)
  # Train twice over: batches do not span epochs, and a batch is 8 rows.
  for name, problems in (("train.jsonl", PROBLEMS * 2), ("test.jsonl", PROBLEMS)):
    with open(os.path.join(data_dir, name), "w") as f:
      for question, answer in problems:
        f.write(json.dumps({"question": question, "answer": answer}) + "\n")
  bindings = _bindings(data_dir, run_dir)
  config.parse(GIN_FILES, bindings)
  run = runner.training_settings()
  batches = pipeline.get_batches(run.task, "train",
                                 feature_lengths=LENGTHS, batch_size=8, shuffle=False, seed=None,
                                 feature_converter=run.model.feature_converter(False))
  train_summary = train_job.train(run_dir, dataclasses.replace(
      run, partitioner=Partitioner((1, 1), devices=tuple(jax.devices()[:1]))), batches=batches)
  assert train_summary["loss_last"] < 0.5 * train_summary["loss_first"]

  config.parse(GIN_FILES, bindings + [
      "run.mode = 'evaluate'", f"evaluate.settings = {SETTINGS}",
      "evaluate.temperatures = [0.0, 0.7]", "evaluate.diversity_samples = 2"])
  result = gin.get_configurable("run")()  # evaluates on the 8-device mesh of meshes/cpu.gin
  settings = runner.training_settings()
  yield result, run_dir, settings
  config.parse(GIN_FILES[:1])
  registry.forget(TASK)


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_files_and_summaries(evaluated):
  result, run_dir, _ = evaluated
  out = result["output_dir"]
  assert out == os.path.join(run_dir, "eval", f"{TASK}_test_step{STEPS}")  # EvalSettings.split
  names = ["greedy", "greedy_calc", "beam2", "sample_t0", "sample_t0.7"]
  assert list(result["settings"]) == names
  expected_files = {f"{n}{suffix}" for n in names + ["diversity_K2_t1"]
                    for suffix in (".jsonl", "_summary.json")} | {"summary.json"}
  assert set(os.listdir(out)) == expected_files
  with open(os.path.join(out, "summary.json")) as f:
    assert json.load(f)["settings"]["beam2"]["decoding"]["beam_size"] == 2
  for name in names:
    records = _read_jsonl(os.path.join(out, f"{name}.jsonl"))
    summary = result["settings"][name]
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert [r["reference"] for r in records] == [a for _, a in PROBLEMS]
    assert [r["input"] for r in records] == [q for q, _ in PROBLEMS]
    # Per-example and corpus scores recomputed from the texts.
    refs, outs = [r["reference"] for r in records], [r["output"] for r in records]
    correct = metrics.gsm8k_correct(refs, outs)
    assert [r["scores"]["correct"] for r in records] == [100 * c for c in correct]
    assert summary["scores"]["accuracy"] == pytest.approx(100 * np.mean(correct))
    assert [r["answer"] for r in records] == [metrics.gsm8k_final_number(o) for o in outs]
    assert summary["diversity"]["distinct_2"] == {
        "value": pytest.approx(metrics.distinct_n(outs, 2)), "samples_per_input": 1,
        "temperature": {"greedy": 0.0, "greedy_calc": 0.0, "beam2": None, "sample_t0": 0.0,
                        "sample_t0.7": 0.7}[name], "tokenize": "13a"}
    reward = summary["reward"]
    assert reward["gamma"] == 0.9 and reward["score"] == "correct"  # the objective's gamma
    assert reward["mean_summed_reward"] == pytest.approx(
        np.mean([r["implicit_reward"] for r in records]), rel=1e-5)
    assert reward["spearman"] == pytest.approx(rewards.spearman(
        [r["implicit_reward"] for r in records], [r["scores"]["correct"] for r in records]))
    entropy = sum(r["mean_entropy"] * r["num_tokens"] for r in records) / sum(
        r["num_tokens"] for r in records)
    assert summary["entropy"]["mean_token_entropy"] == pytest.approx(entropy, rel=1e-5)
    assert summary["checkpoint_step"] == STEPS and summary["metric"] == "gsm8k"
    assert summary["repeated_3gram_rate"] == metrics.repeated_3gram_rate(outs)
    assert summary["reference_repeated_3gram_rate"] == metrics.repeated_3gram_rate(
        [r["reference"] for r in records])
    # Baselines chosen on train (every answer twice: the first, 5, is the most frequent; the
    # first rule with the best train accuracy, 1 of 4, is the sum), scored on the 4 examples.
    assert summary["baselines"] == {
        "constant": {"output": "#### 5", "scores": {"accuracy": 25.0},
                     "repeated_3gram_rate": 0.0},
        "numbers_rule": {"rule": "sum of all numbers", "scores": {"accuracy": 25.0},
                         "repeated_3gram_rate": 0.0}}
    assert summary["best_baseline"] == {"name": "constant", "score": 25.0, "metric": "accuracy"}
    assert summary["margin"] == pytest.approx(summary["scores"]["accuracy"] - 25.0)
  with open(os.path.join(out, "summary.json")) as f:
    assert json.load(f)["example_indices"] == [0, 1, 2, 3]


def test_outputs_rewards_and_calculator(evaluated):
  result, run_dir, settings = evaluated
  out = result["output_dir"]
  read = lambda name: _read_jsonl(os.path.join(out, f"{name}.jsonl"))
  greedy, calc, sample_t0 = read("greedy"), read("greedy_calc"), read("sample_t0")
  # The trained model writes the memorised (wrong) annotation; the calculator forces 56.
  assert "<<7*8=54" in greedy[3]["output"]
  assert calc[3]["output"].startswith("7*8 = <<7*8=56>>")
  for record in calc:  # every completed annotation under the calculator is right
    for expr, value in calculator_annotations(record["output"]):
      assert calculator.calculate(expr) == value
  assert [r["output"] for r in sample_t0] == [r["output"] for r in greedy]

  # Independent recomputation with the restored parameters: greedy tokens from the plain
  # jitted decoder, and the implicit reward from soft_q on teacher-forced logits.
  model, vocab = settings.model, pipeline.get_vocabulary(TASK)
  partitioner = Partitioner((1, 1), devices=tuple(jax.devices()[:1]))
  tx, _ = settings.training.make_optimizer()
  params, shardings, step = common.restore_params(
      run_dir, model=model, tx=tx, partitioner=partitioner,
      input_shapes={"encoder_input_tokens": (4, LENGTHS["inputs"]),
                    "decoder_input_tokens": (4, LENGTHS["targets"])})
  assert step == STEPS
  examples = pipeline.get_examples(TASK, "test", num_examples=None, feature_lengths=LENGTHS)
  enc = np.stack([ex["input_tokens"] for ex in examples])
  decode = decoding_config.make_decode_fn(model, decoding_config.DecodingConfig("greedy"),
                                    max_decode_length=LENGTHS["targets"],
                                    partitioner=partitioner, param_shardings=shardings)
  tokens = np.asarray(decode(params, enc, jax.random.PRNGKey(0)))
  assert [vocab.decode(predict.output_ids(t)) for t in tokens] == [
      r["output"] for r in greedy]
  weights = rewards.output_weights(jnp.asarray(tokens))
  logits = jax.jit(model.logits)(params, {"encoder_input_tokens": enc,
                                 "decoder_input_tokens": np.pad(tokens[:, :-1], ((0, 0), (1, 0))),
                                 "decoder_target_tokens": tokens})
  expected = soft_q.implicit_rewards(logits, tokens, weights, gamma=0.9).sum(axis=1)
  np.testing.assert_allclose([r["implicit_reward"] for r in greedy], expected, rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_array_equal([r["num_tokens"] for r in greedy], np.asarray(weights).sum(1))


def calculator_annotations(text):
  import re  # pylint: disable=g-import-not-at-top
  return re.findall(r"<<([^=>]*)=([^>]*)>>", text)


def test_diversity_summary(evaluated):
  result, _, _ = evaluated
  div = result["diversity"]
  records = _read_jsonl(os.path.join(result["output_dir"], "diversity_K2_t1.jsonl"))
  assert len(records) == 4 and all(len(r["samples"]) == 2 for r in records)
  groups = [[s["output"] for s in r["samples"]] for r in records]
  for key in ("self_bleu", "distinct_1", "distinct_2"):
    assert (div[key]["samples_per_input"], div[key]["temperature"], div[key]["tokenize"]) == (
        2, 1.0, "13a")
  assert div["self_bleu"]["value"] == pytest.approx(metrics.self_bleu(groups))
  assert div["distinct_1"]["value"] == pytest.approx(
      metrics.distinct_n([o for g in groups for o in g], 1))
  assert div["reward"]["spearman"]["n"] == 8  # K * N samples
  assert div["entropy"]["samples_per_input"] == 2 and div["entropy"]["mean_token_entropy"] > 0


def test_evaluate_errors(tmp_path):
  settings = RunSettings(model=object(), task="arithmetic_word_problems",
                         feature_lengths={"inputs": 8, "targets": 8})
  with pytest.raises(ValueError, match="unknown decoding setting 'beam_4'"):
    evaluate_job.evaluate(str(tmp_path), EvaluateSettings(settings=["beam_4"]), settings)
  with pytest.raises(ValueError, match="calculator works with greedy"):
    evaluate_job.evaluate(str(tmp_path), EvaluateSettings(settings=["beam4_calc"]), settings)
  with pytest.raises(errors.SettingError, match="lacks train.model"):
    evaluate_job.evaluate(str(tmp_path), EvaluateSettings(), RunSettings(task="x"))
  assert [c.describe() for c in evaluate_job.resolve_settings(
      ["greedy", "sample_t0.5"], temperatures=[0.5, 1.0], beam_sizes=[4])] == [
          "greedy", "sample_t0.5", "sample_t1", "beam4"]


def test_no_checkpoint_error(tmp_path):
  import optax  # pylint: disable=g-import-not-at-top
  from irl_lm.models import t5  # pylint: disable=g-import-not-at-top
  settings = RunSettings(
      model=t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=4096)),
      task="arithmetic_word_problems", feature_lengths={"inputs": 8, "targets": 8},
      partitioner=Partitioner((1, 1), devices=tuple(jax.devices()[:1])),
      training=TrainSettings(optimizer=lambda schedule: optax.adam(schedule),
                             schedule=lambda total_steps: optax.constant_schedule(1e-3)))
  with pytest.raises(checkpoints.CheckpointError, match="no checkpoint in .*train one first"):
    evaluate_job.evaluate(str(tmp_path / "never_trained"), EvaluateSettings(num_examples=2),
                          settings)
  assert not (tmp_path / "never_trained").exists()


def test_select_by_nll_and_diversity_temperatures(evaluated, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  _, run_dir, settings = evaluated
  copy = str(tmp_path / "run")
  shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval"))
  with pytest.raises(common.JobError, match="no checkpoint of .* with eval_test/nll"):
    evaluate_job.evaluate(copy, EvaluateSettings(settings=["greedy"], select_by="nll"), settings)
  with open(os.path.join(copy, "metrics.jsonl"), "a") as f:  # as EvalSettings.every logs them
    f.write(json.dumps({"step": STEPS // 2, "eval_test/nll": 0.5}) + "\n")  # no checkpoint
    f.write(json.dumps({"step": STEPS, "eval_test/nll": 0.9}) + "\n")
  with pytest.raises(common.JobError, match="not both"):
    evaluate_job.evaluate(copy, EvaluateSettings(select_by="nll", checkpoint_step=STEPS),
                          settings)
  result = evaluate_job.evaluate(
      copy, EvaluateSettings(settings=["greedy"], select_by="nll", diversity_samples=2,
                             diversity_temperatures=[0.5, 1.0]), settings)
  assert result["checkpoint_selection"] == {"metric": "eval_test/nll", "step": STEPS,
                                            "value": 0.9, "candidates": 1, "final_step": STEPS}
  assert result["output_dir"] == os.path.join(copy, "eval", f"{TASK}_test_best_nll_step{STEPS}")
  assert [s["setting"] for s in result["diversity_sweep"]] == ["diversity_K2_t0.5",
                                                               "diversity_K2_t1"]
  assert result["diversity"]["setting"] == "diversity_K2_t1"  # evaluate.diversity_temperature
  for summary in result["diversity_sweep"]:
    records = _read_jsonl(os.path.join(result["output_dir"], f"{summary['setting']}.jsonl"))
    groups = [[s["output"] for s in r["samples"]] for r in records]
    assert summary["self_bleu"]["value"] == pytest.approx(metrics.self_bleu(groups))
