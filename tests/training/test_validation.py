"""The teacher-forced validation loss: the objective's metrics without gradient, on a mesh."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irl_lm.models import t5
from irl_lm.partitioning import Partitioner
from irl_lm.training import objectives, state as state_lib, validation
from tests.training.test_step import B, L, T, VOCAB, _batches


def test_loss_fn_equals_the_objective_and_averages_batches():
  objective = objectives.IQLearn(td_weight=0.5, gamma=0.9)
  model = t5.EncoderDecoderModel(t5.t5_1_1_config("tiny", vocab_size=VOCAB,
                                                  activation_dtype=jnp.float32,
                                                  num_encoder_layers=1, num_decoder_layers=1))
  partitioner = Partitioner((2, 1), devices=tuple(jax.devices()[:2]))
  shapes = {"encoder_input_tokens": (B, L), "decoder_input_tokens": (B, T)}
  layout = state_lib.build_state_layout(model, optax.sgd(0.1), partitioner, shapes, seed=0)
  params = layout.init_fn().params
  loss_fn = validation.make_loss_fn(model, objective, partitioner=partitioner,
                                    param_shardings=layout.param_shardings)
  batches = _batches(2)
  expected = []
  for batch in batches:
    loss, metrics = objective(jax.device_get(params), batch, None, model)
    expected.append({**{("token_accuracy" if k == "accuracy" else k): float(v)
                        for k, v in metrics.items()}, "loss": float(loss)})
  got = loss_fn(params, batches[0])
  assert set(got) == set(expected[0]) and {"nll", "td_loss", "loss", "token_accuracy"} <= set(got)
  for k in got:
    assert got[k] == pytest.approx(expected[0][k], rel=1e-4, abs=1e-5)
  mean = validation.mean_metrics(loss_fn, params, batches)
  assert mean["nll"] == pytest.approx(np.mean([e["nll"] for e in expected]), rel=1e-4)
  assert validation.mean_metrics(loss_fn, params, []) == {}


def test_online_objectives_are_measured_offline():
  online = objectives.IQLearnOnline(td_weight=0.2, gamma=0.9)
  assert validation.offline_objective(online) == objectives.IQLearn(td_weight=0.2, gamma=0.9)
  assert validation.offline_objective(objectives.GAIL()) == objectives.MLE()
  offline = objectives.IQLearn(td_weight=0.3)
  assert validation.offline_objective(offline) is offline


def test_select_step_picks_the_lowest_checkpointed_value():
  records = [{"step": 0, "eval_validation/nll": 3.0},
             {"step": 10, "train/loss": 1.0},
             {"step": 100, "eval_validation/nll": 1.5},
             {"step": 200, "eval_validation/nll": 1.2},  # no checkpoint at 200
             {"step": 300, "eval_validation/nll": 1.5},
             {"step": 400, "eval_validation/nll": 1.8, "eval_test/nll": 0.1}]
  assert validation.select_step(records, [100, 300, 400], split="validation") == (100, 1.5)
  assert validation.select_step(records, [0, 100, 200, 300], split="validation") == (200, 1.2)
  assert validation.select_step(records, [400], split="test") == (400, 0.1)
  assert validation.select_step(records, [10], split="validation") is None
  assert validation.select_step(records, [100], split="validation", metric="td_loss") is None
