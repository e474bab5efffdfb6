"""Gradient accumulation (`TrainSettings.microbatches`): k slices of a batch make the same update
as the whole batch, within float rounding, on one device and on the 8-device mesh."""

import jax
import numpy as np
import optax
import pytest

from irl_lm.models import t5
from irl_lm.partitioning import Partitioner
from irl_lm.training import objectives, state as state_lib, step as step_lib
from tests.training.test_methods import TINY
from tests.training.test_step import B, L, T, _batches

SHAPES = {"encoder_input_tokens": (B, L), "decoder_input_tokens": (B, T)}


def _run(objective, microbatches, mesh=(1, 1), steps=2):
  partitioner = Partitioner(mesh, devices=tuple(jax.devices()[:mesh[0] * mesh[1]]))
  model = t5.EncoderDecoderModel(TINY)
  # Plain SGD: the parameters show the gradients as they are (Adam would magnify rounding in
  # the near-zero gradient entries into sign flips).
  schedule = optax.constant_schedule(0.5)
  tx = optax.sgd(schedule)
  layout = state_lib.build_state_layout(model, tx, partitioner, SHAPES, objective=objective)
  step = step_lib.make_train_step(model=model, objective=objective, tx=tx, schedule=schedule,
                                  partitioner=partitioner, shardings=layout.shardings,
                                  microbatches=microbatches)
  state, history = layout.init_fn(), []
  for batch in _batches(steps):
    state, metrics = step(state, jax.device_put(batch, partitioner.batch_sharding()))
    history.append(jax.device_get(metrics))
  return jax.device_get(state.params), history


@pytest.mark.parametrize("objective", [objectives.MLE(entropy_weight=0.1),
                                       objectives.IQLearn(td_weight=0.5, gamma=0.9)],
                         ids=["mle_entropy", "iqlearn"])
def test_accumulated_update_equals_the_whole_batch(objective):
  whole, whole_history = _run(objective, 1)
  # The batches' rows hold different numbers of target tokens: equal-weight averaging of the
  # slices would not match; weighting by real tokens does.
  for k in (2, 4):
    params, history = _run(objective, k)
    for a, b in zip(history, whole_history):
      np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-6)
      np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                 params, whole)


def test_accumulation_on_the_data_parallel_mesh():
  whole, _ = _run(objectives.IQLearn(td_weight=0.5), 1)
  params, _ = _run(objectives.IQLearn(td_weight=0.5), 2, mesh=(4, 1))
  # atol 5e-6: the 4-device whole-batch run alone differs from the 1-device one by up to 3.6e-6
  # in these parameters (float32 sums in another order), as do 2 slices on one device.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=5e-6), params, whole)


def test_bad_microbatch_settings_are_refused_clearly():
  with pytest.raises(ValueError, match="not divisible by TrainSettings.microbatches"):
    step_lib.check_microbatches(3, objectives.MLE(), 8)
  with pytest.raises(ValueError, match="offline objectives only"):
    step_lib.check_microbatches(2, objectives.IQLearnOnline(), 8)
  with pytest.raises(ValueError, match="positive integer"):
    step_lib.check_microbatches(0, objectives.MLE(), 8)
  assert step_lib.check_microbatches(2, objectives.MLE(), 16, 8) == 2
