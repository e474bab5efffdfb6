"""Per-term gradient norms (`TrainSettings.term_grad_norms`): equal to jax.grad by hand, to the
step's own gradient norm when the objective is a single term, and logged without changing the
training."""

import dataclasses
import json

import jax
import numpy as np
import optax
import pytest

from irl_lm import errors
from irl_lm.jobs import train as train_job
from irl_lm.models import t5
from irl_lm.partitioning import Partitioner
from irl_lm.training import objectives, state as state_lib, step as step_lib
from irl_lm.training import term_norms
from irl_lm.training.settings import CheckpointSettings, EvalSettings, RunSettings, TrainSettings
from tests.training.test_methods import TINY
from tests.training.test_step import B, L, T, _batches

SHAPES = {"encoder_input_tokens": (B, L), "decoder_input_tokens": (B, T)}


def _setup(objective, mesh=(1, 1), dropout_rate=0.0):
  partitioner = Partitioner(mesh, devices=tuple(jax.devices()[:mesh[0] * mesh[1]]))
  model = t5.EncoderDecoderModel(dataclasses.replace(TINY, dropout_rate=dropout_rate))
  schedule = optax.constant_schedule(0.1)
  tx = optax.sgd(schedule)
  layout = state_lib.build_state_layout(model, tx, partitioner, SHAPES, objective=objective)
  return model, partitioner, layout, tx, schedule


def _hand_norm(objective, model, params, batch, rng, term):
  grads = jax.grad(lambda p: objective(p, batch, rng, model)[1][term])(params)
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                           for g in jax.tree.leaves(grads))))


@pytest.mark.parametrize("objective, terms", [
    (objectives.IQLearn(td_weight=0.5, gamma=0.9), ("nll", "td_loss", "entropy")),
    (objectives.MLE(entropy_weight=0.1), ("nll", "entropy")),  # its td_loss has no gradient
], ids=["iqlearn", "mle_entropy"])
def test_norms_equal_jax_grad_by_hand(objective, terms):
  model, _, layout, _, _ = _setup(objective)
  params = layout.init_fn().params
  batch = {k: jax.numpy.asarray(v) for k, v in _batches(1)[0].items()}
  rng = jax.random.PRNGKey(3)
  norms = jax.jit(lambda p, b, r: term_norms.term_grad_norms(objective, p, b, r, model))(
      params, batch, rng)
  assert sorted(norms) == sorted(f"grad_norm/{t}" for t in terms)
  for term in terms:
    expected = _hand_norm(objective, model, params, batch, rng, term)
    assert expected > 1e-3, term  # a real pull, not a vacuous zero
    np.testing.assert_allclose(float(norms[f"grad_norm/{term}"]), expected, rtol=2e-5)
  # The terms pull with different strengths: the norms are not one value copied.
  assert len({round(float(v), 4) for v in norms.values()}) == len(terms)


@pytest.mark.parametrize("mesh, microbatches", [((1, 1), 1), ((4, 2), 1), ((4, 2), 2)],
                         ids=["one_device", "mesh_4x2", "mesh_4x2_microbatches"])
def test_nll_norm_is_the_step_grad_norm_without_td(mesh, microbatches):
  """With λ = 0 the loss is the NLL, so its norm is the step's own (unclipped) 'grad_norm';
  with dropout on, this holds only if the norms draw the step's dropout key."""
  objective = objectives.IQLearn(td_weight=0.0)
  model, partitioner, layout, tx, schedule = _setup(objective, mesh, dropout_rate=0.1)
  norms_fn = term_norms.make_term_grad_norms(
      model=model, objective=objective, partitioner=partitioner, shardings=layout.shardings,
      microbatches=microbatches)
  step = step_lib.make_train_step(model=model, objective=objective, tx=tx, schedule=schedule,
                                  partitioner=partitioner, shardings=layout.shardings,
                                  microbatches=microbatches)
  state = layout.init_fn()
  for batch in _batches(2):
    batch = jax.device_put(batch, partitioner.batch_sharding())
    norms = jax.device_get(norms_fn(state, batch))
    state, metrics = step(state, batch)
    np.testing.assert_allclose(norms["grad_norm/nll"], float(metrics["grad_norm"]), rtol=1e-5)
    assert norms["grad_norm/td_loss"] > 0  # measured even though λ = 0 gives it no weight


def _train(run_dir, term_grad_norms):
  batches = iter(_batches(4, seed=1))
  run = RunSettings(
      model=t5.EncoderDecoderModel(dataclasses.replace(TINY, dropout_rate=0.1)), task="unused",
      feature_lengths={"inputs": L, "targets": T},
      objective=objectives.IQLearn(td_weight=0.1), partitioner=Partitioner((-1, 1)),
      training=TrainSettings(num_train_steps=4, batch_size=B,
                             optimizer=lambda schedule: optax.adam(schedule),
                             schedule=lambda total_steps: optax.constant_schedule(3e-3),
                             log_every=2, tensorboard=False, term_grad_norms=term_grad_norms),
      evaluation=EvalSettings(examples=0), checkpoints=CheckpointSettings(every=4))
  return train_job.train(str(run_dir), run, batches=batches)


def test_training_logs_the_norms_and_is_unchanged(tmp_path):
  with_norms = _train(tmp_path / "with", True)
  without = _train(tmp_path / "without", False)
  records = [json.loads(l) for l in open(tmp_path / "with" / "metrics.jsonl")]
  assert [r["step"] for r in records] == [2, 4]
  keys = ("train/grad_norm/nll", "train/grad_norm/td_loss", "train/grad_norm/entropy")
  for record in records:
    for key in keys:
      assert np.isfinite(record[key]) and record[key] > 0, key
  plain = [json.loads(l) for l in open(tmp_path / "without" / "metrics.jsonl")]
  assert not any(k.startswith("train/grad_norm/") for r in plain for k in r)
  # Same random keys, same updates: every training metric is bit-identical.
  for a, b in zip(with_norms["history"], without["history"]):
    for key in ("loss", "nll", "td_loss", "grad_norm"):
      assert a[key] == b[key], key


def test_online_objectives_and_non_bools_are_refused():
  with pytest.raises(errors.SettingError, match=r"TrainSettings.term_grad_norms = True .* "
                     r"IQLearnOnline samples online: set it to False"):
    RunSettings(model=t5.EncoderDecoderModel(TINY), task="unused",
                feature_lengths={"inputs": L, "targets": T},
                objective=objectives.IQLearnOnline(),
                training=TrainSettings(num_train_steps=1, batch_size=B,
                                       term_grad_norms=True)).validate()
  with pytest.raises(errors.SettingError, match="TrainSettings.term_grad_norms = 'yes'"):
    TrainSettings(term_grad_norms="yes")
