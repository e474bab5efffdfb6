"""Inference mode (irl_lm/inference.py): restore a trained run and decode an input file."""
from __future__ import annotations

import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irl_lm import decoding
from irl_lm.jobs import common, infer as inference
from irl_lm.data import pipeline
from irl_lm.decoding.config import DecodingConfig
from irl_lm.models import t5
from irl_lm.checkpoints import manager as checkpoints
from irl_lm.jobs import train as train_job
from irl_lm.training import objectives
from irl_lm.partitioning import Partitioner
from irl_lm.training.settings import CheckpointSettings, EvalSettings, RunSettings, TrainSettings

TASK = "stdlib_docstrings"
L, T, B, STEPS = 32, 16, 8, 60
# Single-line inputs, so that the plain-text input format can carry them too.
PAIRS = [("def add(a, b): return a + b", "Return the sum of two numbers."),
         ("def is_empty(items): return not items", "Check whether a list is empty.")]


def _training_batch(vocab) -> dict[str, np.ndarray]:
  """B rows alternating the two pairs, tokenised as seqio does (trim, EOS, pad)."""
  enc = np.zeros((B, L), np.int32)
  targets = np.zeros((B, T), np.int32)
  for row in range(B):
    source, target = PAIRS[row % 2]
    ids = vocab.encode(source)[:L - 1] + [1]
    enc[row, :len(ids)] = ids
    ids = vocab.encode(target)[:T - 1] + [1]
    targets[row, :len(ids)] = ids
  inputs = np.concatenate([np.zeros((B, 1), np.int32), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": enc, "decoder_input_tokens": inputs,
          "decoder_target_tokens": targets,
          "decoder_loss_weights": (targets > 0).astype(np.float32)}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A tiny T5 that memorised PAIRS: (run_dir, training settings, vocabulary)."""
  vocab = pipeline.get_vocabulary(TASK)
  run_dir = str(tmp_path_factory.mktemp("run"))
  settings = RunSettings(
      model=t5.EncoderDecoderModel(t5.t5_1_1_config(
          "tiny", vocab_size=vocab.vocab_size, activation_dtype=jnp.float32)),
      task=TASK, feature_lengths={"inputs": L, "targets": T},
      objective=objectives.IQLearn(td_weight=0.1), partitioner=Partitioner((-1, 1)),
      training=TrainSettings(num_train_steps=STEPS, batch_size=B,
                             optimizer=lambda schedule: optax.adam(schedule),
                             schedule=lambda total_steps: optax.constant_schedule(3e-3),
                             log_every=5, tensorboard=False),
      evaluation=EvalSettings(examples=0, decoding=DecodingConfig("greedy")),
      checkpoints=CheckpointSettings(every=STEPS))
  summary = train_job.train(run_dir, settings, batches=itertools.repeat(_training_batch(vocab)))
  assert summary["final_step"] == STEPS and summary["loss_last"] < 0.5 * summary["loss_first"]
  return run_dir, settings, vocab


def _write_jsonl(path, records) -> str:
  with open(path, "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
  return str(path)


def _read_jsonl(path) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_decodes_memorised_targets_with_consistent_scores(trained_run, tmp_path):
  run_dir, settings, vocab = trained_run
  # JSON lines with both field names and an extra field that must be carried through.
  path = _write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "input": PAIRS[0][0]},
                                              {"id": "b", "inputs": PAIRS[1][0]}])
  summary = inference.infer(run_dir, inference.InferSettings(
      path, str(tmp_path / "out.jsonl"), decoding=DecodingConfig("greedy"), progress=False),
                            settings)
  assert summary["checkpoint_step"] == STEPS and summary["num_inputs"] == 2
  assert summary["batch_size"] == 8  # the training batch size (8) fits the data axis (8)
  records = _read_jsonl(tmp_path / "out.jsonl")
  assert [r["id"] for r in records] == ["a", "b"]
  assert [r["input"] for r in records] == [PAIRS[0][0], PAIRS[1][0]]
  assert [r["output"] for r in records] == [PAIRS[0][1], PAIRS[1][1]]
  for record, (_, target) in zip(records, PAIRS):
    assert record["tokens"] == vocab.encode(target)
    assert record["length"] == len(record["tokens"]) + 1  # EOS counted
    assert not record["truncated"]

  # log_prob equals the sum of the per-token log-probs the cached sampler reports.
  params, _, step = common.restore_params(
      run_dir, model=settings.model, tx=settings.training.make_optimizer()[0],
      partitioner=settings.partitioner,
      input_shapes={"encoder_input_tokens": (B, L), "decoder_input_tokens": (B, T)})
  assert step == STEPS
  enc, _ = inference.encode_inputs([p[0] for p in PAIRS], vocab, L)
  out = decoding.temperature_sample(settings.model, params, jnp.asarray(enc),
                                    jax.random.key(0), max_decode_length=T, temperature=0.0)
  np.testing.assert_allclose([r["log_prob"] for r in records],
                             np.asarray(out.log_probs).sum(axis=1), rtol=1e-4, atol=1e-4)
  assert all(-5.0 < r["log_prob"] < 0.0 for r in records)  # memorised: likely, but not certain

  # Plain text, beam search: same outputs; score = log_prob / length penalty.
  text = tmp_path / "in.txt"
  text.write_text(f"{PAIRS[0][0]}\n\n{PAIRS[1][0]}\n")
  beam = DecodingConfig("beam", beam_size=3, alpha=0.6)
  summary = inference.infer(run_dir, inference.InferSettings(str(text), decoding=beam,
                                                             progress=False), settings)
  assert summary["output_file"] == os.path.join(run_dir, "infer_in_beam3.jsonl")
  records = _read_jsonl(summary["output_file"])
  assert [r["output"] for r in records] == [PAIRS[0][1], PAIRS[1][1]]
  for r in records:
    np.testing.assert_allclose(
        r["score"], r["log_prob"] / float(decoding.length_penalty(r["length"], 0.6)), rtol=1e-6)

  # Sampling with top_k = 1 can only pick the argmax: equals greedy.
  summary = inference.infer(run_dir, inference.InferSettings(
      str(text), str(tmp_path / "k1.jsonl"),
      decoding=DecodingConfig("sample", temperature=1.0, top_k=1, seed=3), progress=False),
                            settings)
  assert [r["output"] for r in _read_jsonl(tmp_path / "k1.jsonl")] == [p[1] for p in PAIRS]


def test_missing_checkpoint_and_input_errors(tmp_path):
  vocab_size = pipeline.get_vocabulary(TASK).vocab_size
  settings = RunSettings(
      model=t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=vocab_size)),
      task=TASK, feature_lengths={"inputs": L, "targets": T}, partitioner=Partitioner((-1, 1)),
      training=TrainSettings(num_train_steps=1, batch_size=B,
                             optimizer=lambda schedule: optax.adam(schedule),
                             schedule=lambda total_steps: optax.constant_schedule(1e-3)))
  path = _write_jsonl(tmp_path / "in.jsonl", [{"input": "def f(): pass"}])
  run_dir = tmp_path / "never_trained"
  with pytest.raises(checkpoints.CheckpointError, match="no checkpoint in .*train one first"):
    inference.infer(str(run_dir), inference.InferSettings(path, progress=False), settings)
  assert not run_dir.exists()  # nothing was created

  with pytest.raises(common.JobError, match="input file .*missing.jsonl not found"):
    inference.infer(str(run_dir), inference.InferSettings(str(tmp_path / "missing.jsonl")),
                    settings)
  with pytest.raises(common.JobError, match="no input file"):
    inference.infer(str(run_dir), inference.InferSettings(None), settings)
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"input": "ok"}\n{"text": "no input field"}\n')
  with pytest.raises(common.JobError, match="line 2 of .*bad.jsonl has no string"):
    inference.read_inputs(str(bad))
  bad.write_text('{"input": "ok"}\nnot json\n')
  with pytest.raises(common.JobError, match="line 2 .* is not valid JSON"):
    inference.read_inputs(str(bad))
  # A text file whose lines happen to look like JSON is still text when named .txt.
  (tmp_path / "x.txt").write_text('{"input": "a"}\nplain\n')
  assert inference.read_inputs(str(tmp_path / "x.txt")) == [{"input": '{"input": "a"}'},
                                                            {"input": "plain"}]
  (tmp_path / "x.in").write_text('{"input": "a", "n": 1}\n')
  assert inference.read_inputs(str(tmp_path / "x.in")) == [{"n": 1, "input": "a"}]


@pytest.mark.parametrize("length", [16, 512])
def test_tokenisation_matches_the_task_pipeline(length):
  """Inputs are tokenised, cut and given EOS exactly as the training data is."""
  examples = pipeline.get_examples(TASK, "validation", num_examples=3,
                                   feature_lengths={"inputs": length, "targets": 8})
  task = pipeline.get_task(TASK)
  tokens, truncated = inference.encode_inputs(
      [ex["inputs_text"] for ex in examples], task.output_features["inputs"].vocabulary, length,
      prefix=inference.task_input_prefix(task))
  np.testing.assert_array_equal(tokens, np.stack([ex["input_tokens"] for ex in examples]))
  if length == 16:
    assert truncated.all()
  assert inference.task_input_prefix(pipeline.get_task("xsum")) == "summarize: "


def test_cli_infer_finds_the_training_run_dir(tmp_path, monkeypatch):
  """`run.mode = 'infer'` with the training gin files reads that run's directory (as main.py
  runs it: the gin-configured `run`)."""
  import gin
  from irl_lm import config
  monkeypatch.chdir(tmp_path)
  train_bindings = ["TrainSettings.num_train_steps = 2", "TrainSettings.batch_size = 8",
                    "train.feature_lengths = {'inputs': 32, 'targets': 8}",
                    "EvalSettings.examples = 0", "TrainSettings.tensorboard = False",
                    "CheckpointSettings.every = 2", "make_schedule.warmup_steps = 1"]
  path = _write_jsonl(tmp_path / "in.jsonl", [{"input": "def f(x): return x"}] * 3)
  infer_bindings = train_bindings + [
      "run.mode = 'infer'", f"infer.input_file = '{path}'", "infer.progress = False",
      "infer.decoding = @infer/DecodingConfig()", "infer/DecodingConfig.method = 'beam'",
      "infer/DecodingConfig.beam_size = 2"]
  config.parse(["gin/iqlearn_tiny.gin"], infer_bindings)
  with pytest.raises(checkpoints.CheckpointError, match="no checkpoint"):
    gin.get_configurable("run")(default_name="iqlearn_tiny")

  config.parse(["gin/iqlearn_tiny.gin"], train_bindings)
  gin.get_configurable("run")(default_name="iqlearn_tiny")
  (run_dir,) = os.listdir(tmp_path / "runs")

  config.parse(["gin/iqlearn_tiny.gin"], infer_bindings)
  summary = gin.get_configurable("run")(default_name="iqlearn_tiny")
  assert summary["checkpoint_step"] == 2 and summary["decoding"] == "beam2"
  assert summary["output_file"] == str(tmp_path / "runs" / run_dir / "infer_in_beam2.jsonl")
  records = _read_jsonl(summary["output_file"])
  assert len(records) == 3 and all(np.isfinite(r["score"]) for r in records)
  assert os.listdir(tmp_path / "runs") == [run_dir]  # no second run directory


def test_run_and_infer_bindings_keep_the_fingerprint():
  """gin heads each configurable's bindings with a comment: a `run`/`infer` section (and a
  scoped `infer/DecodingConfig`) must not change the run directory's fingerprint."""
  import gin
  from irl_lm import config, runner as jobs

  def fingerprint(*bindings):
    config.parse(["gin/iqlearn_tiny.gin"], list(bindings))
    return jobs._config_fingerprint(gin.config_str())

  plain = fingerprint()
  assert fingerprint("run.mode = 'train'") == plain
  assert fingerprint("run.mode = 'infer'", "infer.input_file = '" + "x" * 200 + ".jsonl'",
                     "infer.decoding = @infer/DecodingConfig()",
                     "infer/DecodingConfig.method = 'sample'") == plain
  assert fingerprint("TrainSettings.num_train_steps = 7") != plain
  assert fingerprint("DecodingConfig.method = 'beam'") != plain  # EvalSettings.decoding's settings
