"""The training loop: metrics log, checkpoints, resume, and run-directory guards."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irl_lm import runner as jobs
from irl_lm.models import t5
from irl_lm.checkpoints import manager as checkpoints
from irl_lm.jobs import train as train_job
from irl_lm.training import objectives, optimizers
from irl_lm.partitioning import Partitioner
from irl_lm.training.settings import CheckpointSettings, EvalSettings, RunSettings, TrainSettings
from tests.training.test_step import VOCAB, B, L, T, _batches

TINY = t5.t5_1_1_config("tiny", vocab_size=VOCAB, activation_dtype=jnp.float32)


def _train(run_dir, num_steps, **overrides):
  batch = _batches(1)[0]
  run = RunSettings(
      model=t5.EncoderDecoderModel(TINY), task="unused",
      feature_lengths={"inputs": L, "targets": T}, objective=objectives.IQLearn(td_weight=0.1),
      partitioner=Partitioner((-1, 1)),
      training=TrainSettings(num_train_steps=num_steps, batch_size=B,
                             optimizer=lambda schedule: optax.adam(schedule),
                             schedule=lambda total_steps: optax.constant_schedule(3e-3),
                             log_every=2, tensorboard=False),
      evaluation=EvalSettings(examples=0), checkpoints=CheckpointSettings(every=4, keep=None))
  return train_job.train(str(run_dir), dataclasses.replace(run, **overrides),
                         batches=iter(lambda: batch, None))


def test_train_logs_checkpoints_and_resumes(tmp_path):
  summary = _train(tmp_path, 8)
  assert summary["final_step"] == 8
  assert summary["loss_last"] < summary["loss_first"]  # one batch, repeated: it is learnt
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in records] == [2, 4, 6, 8]
  for key in ("train/loss", "train/nll", "train/td_loss", "train/grad_norm",
              "train/learning_rate", "train/steps_per_second"):
    assert np.isfinite(records[-1][key]), key
  # Model FLOP/s from the analytic count; no MFU on a CPU (no peak FLOP/s to compare with).
  from irl_lm.models import flops  # pylint: disable=g-import-not-at-top
  expected = (flops.train_flops(TINY, B, {"inputs": L, "targets": T})
              * records[-1]["train/steps_per_second"] / 1e12)
  assert records[-1]["train/model_tflops_per_second"] == pytest.approx(expected, rel=1e-6)
  assert "train/mfu" not in records[-1]
  ckpt = checkpoints.Checkpointer(str(tmp_path / "checkpoints"))
  assert ckpt.all_steps() == [4, 8]
  ckpt.close()

  resumed = _train(tmp_path, 12)
  assert resumed["final_step"] == 12
  assert [h["step"] for h in resumed["history"]] == [10, 12]  # continued, not restarted
  # Training 12 steps in one go gives the same losses as 8 + 4 after a resume (the data is
  # a fixed batch, so the only state is in the checkpoint).
  straight = _train(tmp_path / "straight", 12)
  np.testing.assert_allclose(resumed["history"][-1]["loss"], straight["history"][-1]["loss"],
                             rtol=1e-5)


def test_finished_run_does_nothing_more(tmp_path):
  _train(tmp_path, 4)
  again = _train(tmp_path, 4)
  assert again["final_step"] == 4 and again["history"] == []


def test_checkpoint_of_another_model_is_refused_not_overwritten(tmp_path):
  _train(tmp_path, 4)
  before = sorted(os.listdir(tmp_path / "checkpoints" / "4"))
  bigger = t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=VOCAB, emb_dim=64,
                                                   activation_dtype=jnp.float32))
  with pytest.raises(checkpoints.CheckpointError, match=r"does not match.*shape differs: "
                     r"params/decoder/decoder_norm/scale checkpoint \(128,\) vs model \(64,\)"):
    _train(tmp_path, 8, model=bigger)
  assert sorted(os.listdir(tmp_path / "checkpoints" / "4")) == before
  assert checkpoints.Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [4]


def test_corrupt_checkpoint_is_named(tmp_path):
  _train(tmp_path, 4)
  meta = tmp_path / "checkpoints" / "4" / "state"
  for name in os.listdir(meta):
    path = meta / name
    if path.is_file():
      path.write_bytes(b"garbage")
  with pytest.raises(checkpoints.CheckpointError, match="checkpoints/4"):
    _train(tmp_path, 8)


def test_run_dir_with_another_config_is_refused(tmp_path):
  jobs.prepare_run_dir(str(tmp_path), "IQLearn.td_weight = 0.1\n", allow_config_change=False)
  jobs.prepare_run_dir(str(tmp_path), "IQLearn.td_weight = 0.1\nrun.mode = 'infer'\n",
                       allow_config_change=False)  # non-training bindings may differ
  with pytest.raises(jobs.RunDirError, match=r"different configuration.*td_weight = 0\.0"):
    jobs.prepare_run_dir(str(tmp_path), "IQLearn.td_weight = 0.0\n", allow_config_change=False)
  jobs.prepare_run_dir(str(tmp_path), "IQLearn.td_weight = 0.0\n", allow_config_change=True)


def test_batch_not_divisible_by_mesh_is_refused(tmp_path):
  from irl_lm.partitioning import PartitioningError
  with pytest.raises(PartitioningError, match="batch size 8 is not divisible"):
    _train(tmp_path, 2, partitioner=Partitioner((-1, 1), devices=tuple(jax.devices()[:3])))


def test_schedules():
  cosine = optimizers.make_schedule("cosine", learning_rate=1.0, warmup_steps=10,
                                    total_steps=110)
  np.testing.assert_allclose([cosine(0), cosine(5), cosine(10), cosine(60), cosine(110)],
                             [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
  rsqrt = optimizers.make_schedule("rsqrt", learning_rate=1.0, warmup_steps=100)
  np.testing.assert_allclose([rsqrt(0), rsqrt(100), rsqrt(400)], [1.0, 1.0, 0.5], rtol=1e-6)
  linear = optimizers.make_schedule("linear", learning_rate=2.0, total_steps=10)
  np.testing.assert_allclose([linear(0), linear(5), linear(10)], [2.0, 1.0, 0.0], atol=1e-6)
  with pytest.raises(ValueError, match="unknown schedule"):
    optimizers.make_schedule("nope")


def test_init_from_starts_training_from_the_given_params(tmp_path):
  from irl_lm.checkpoints import formats as cf, t5x  # pylint: disable=g-import-not-at-top
  from tests.checkpoints import helpers  # pylint: disable=g-import-not-at-top
  params = helpers.random_params()
  t5x.save_t5x(params, str(tmp_path / "pretrained" / "checkpoint_1000000"), dtype=np.float32)
  B_, L_, T_ = 8, 6, 5
  rng = np.random.default_rng(1)
  batch = {"encoder_input_tokens": rng.integers(2, 64, (B_, L_)).astype(np.int32),
           "decoder_input_tokens": rng.integers(2, 64, (B_, T_)).astype(np.int32),
           "decoder_target_tokens": rng.integers(2, 64, (B_, T_)).astype(np.int32),
           "decoder_loss_weights": np.ones((B_, T_), np.float32)}
  model = t5.EncoderDecoderModel(helpers.CONFIG)

  def run(run_dir, num_steps, init_from):
    return train_job.train(str(tmp_path / run_dir), RunSettings(
        model=model, task="unused", feature_lengths={"inputs": L_, "targets": T_},
        objective=objectives.MLE(),
        partitioner=Partitioner((1, 1), devices=tuple(jax.devices()[:1])),  # compiles fastest
        init_from=init_from,
        training=TrainSettings(num_train_steps=num_steps, batch_size=B_,
                               optimizer=lambda schedule: optax.adam(schedule),
                               schedule=lambda total_steps: optax.constant_schedule(1e-2),
                               log_every=1, tensorboard=False),
        evaluation=EvalSettings(examples=0), checkpoints=CheckpointSettings(every=100)),
        batches=iter(lambda: batch, None))

  # No steps: the run's step-0 checkpoint holds exactly the imported parameters.
  assert run("run", 0, str(tmp_path / "pretrained"))["final_step"] == 0
  helpers.assert_exact(params, cf.load_params(str(tmp_path / "run"), helpers.abstract()))
  # Resuming ignores init_from (here a path that does not exist) and trains on from them:
  # the first logged loss is the MLE loss of the imported parameters.
  summary = run("run", 1, str(tmp_path / "nowhere"))
  expected_loss, _ = objectives.MLE()(params, batch, None, model)
  np.testing.assert_allclose(summary["loss_first"], float(expected_loss), rtol=1e-5)
  # A new run with a missing init_from fails clearly instead of starting from scratch.
  with pytest.raises(checkpoints.CheckpointError, match="nowhere: the path does not exist"):
    run("other", 1, str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_eval_every_logs_scores_and_self_bleu_during_training(tmp_path):
  """`eval_every` runs the same Evaluator as the final evaluation, every K steps."""
  summary = _train_tiny_t5(tmp_path, objectives.MLE(), examples=8, diversity_examples=2)
  with open(tmp_path / "metrics.jsonl") as f:
    evals = [r for r in map(json.loads, f) if "eval_validation/rouge1" in r]
  assert [r["step"] for r in evals] == [0, 2, 4]  # from the start of training
  for record in evals:
    assert 0.0 <= record["eval_validation/rouge1"] <= 100.0
    assert 0.0 <= record["eval_validation/self_bleu"] <= 100.0
    assert record["eval_validation/num_examples"] == 8
  assert {f"eval_validation/{k}": v for k, v in summary["eval"].items()} == {
      k: v for k, v in evals[-1].items() if k != "step"}
  with open(tmp_path / "eval_validation_greedy_summary.json") as f:
    final = json.load(f)
  assert final["self_bleu"]["value"] == summary["eval"]["self_bleu"]
  assert (final["self_bleu"]["samples_per_input"], final["self_bleu"]["temperature"]) == (4, 1.0)


@pytest.mark.slow
def test_validation_loss_every_eval_decoding_only_at_the_end(tmp_path):
  """`eval_decode_every = 0`: the periodic evaluations log only the teacher-forced validation
  loss; the final one also decodes, shows the baselines and writes per-example records."""
  summary = _train_tiny_t5(tmp_path, objectives.IQLearn(td_weight=0.5), examples=16,
                           decode_every=0)
  with open(tmp_path / "metrics.jsonl") as f:
    evals = [r for r in map(json.loads, f) if "eval_validation/nll" in r]
  assert [r["step"] for r in evals] == [0, 2, 4]
  assert "eval_validation/rouge1" not in evals[0] and "eval_validation/rouge1" not in evals[1]
  for key in ("rouge1", "baseline_rouge1", "margin", "repeated_3gram_rate"):
    assert f"eval_validation/{key}" in evals[2]
  last = evals[2]
  assert last["eval_validation/margin"] == pytest.approx(
      last["eval_validation/rouge1"] - last["eval_validation/baseline_rouge1"])
  assert last["eval_validation/loss"] == pytest.approx(
      last["eval_validation/nll"] + 0.5 * last["eval_validation/td_loss"], rel=1e-4)
  assert evals[2]["eval_validation/nll"] < evals[1]["eval_validation/nll"] < evals[0][
      "eval_validation/nll"]
  with open(tmp_path / "eval_validation_greedy_summary.json") as f:
    final = json.load(f)
  assert set(final["baselines"]) == {"constant", "name_template"}
  assert final["best_baseline"]["score"] == max(
      b["scores"]["rouge1"] for b in final["baselines"].values())
  assert final["teacher_forced"]["nll"] == last["eval_validation/nll"]
  with open(tmp_path / "eval_validation_greedy.jsonl") as f:
    records = [json.loads(line) for line in f]
  indices = [r["index"] for r in records]
  assert len(indices) == 16 and indices == sorted(set(indices)) and indices != list(range(16))
  for r in records:
    assert r["log_prob"] <= 0.0 and r["num_tokens"] >= 1 and "implicit_reward" in r
  assert summary["eval"]["margin"] == last["eval_validation/margin"]


def _train_tiny_t5(tmp_path, objective, **evaluation):
  """4 steps of a 1-layer T5 on the docstring task, evaluated every 2 steps."""
  model = t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=4096,
                                                  activation_dtype=jnp.float32,
                                                  num_encoder_layers=1, num_decoder_layers=1))
  return train_job.train(str(tmp_path), RunSettings(
      model=model, task="stdlib_docstrings", feature_lengths={"inputs": 32, "targets": 8},
      objective=objective, partitioner=Partitioner((1, 1), devices=tuple(jax.devices()[:1])),
      training=TrainSettings(num_train_steps=4, batch_size=8,
                             optimizer=lambda schedule: optax.adam(schedule),
                             schedule=lambda total_steps: optax.constant_schedule(3e-3),
                             log_every=2, tensorboard=False),
      evaluation=EvalSettings(batch_size=8, every=2, **evaluation),
      checkpoints=CheckpointSettings(every=100)))
