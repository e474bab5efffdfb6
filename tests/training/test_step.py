"""The sharded train step: same numbers on 1 device, (4 data x 2 model) and (8 x 1) meshes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irl_lm.models import t5
from irl_lm.training import objectives, state as state_lib, step as step_lib
from irl_lm.partitioning import Partitioner

VOCAB = 64
B, L, T = 8, 12, 10


def _batches(num: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
  rs = np.random.RandomState(seed)
  out = []
  for _ in range(num):
    targets = rs.randint(3, VOCAB, size=(B, T)).astype(np.int32)
    lengths = rs.randint(3, T + 1, size=(B,))
    weights = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
    targets = np.where(weights > 0, targets, 0)
    targets[np.arange(B), lengths - 1] = 1  # EOS
    inputs = rs.randint(3, VOCAB, size=(B, L)).astype(np.int32)
    inputs[:, L - 3:] = 0  # encoder padding
    out.append({"encoder_input_tokens": inputs,
                "decoder_input_tokens": np.pad(targets[:, :-1], ((0, 0), (1, 0))),
                "decoder_target_tokens": targets,
                "decoder_loss_weights": weights})
  return out


def _run(mesh_shape, devices, objective, num_steps=3, remat_policy="none"):
  model = t5.EncoderDecoderModel(
      t5.t5_1_1_config("tiny", vocab_size=VOCAB, activation_dtype=jnp.float32,
                       remat_policy=remat_policy))
  partitioner = Partitioner(mesh_shape, devices=tuple(devices))
  # Plain SGD: Adam's normalisation would turn float rounding in near-zero gradients into
  # O(lr) parameter differences and hide real sharding bugs behind a loose tolerance.
  schedule = optax.constant_schedule(0.05)
  tx = optax.sgd(schedule)
  shapes = {"encoder_input_tokens": (B, L), "decoder_input_tokens": (B, T)}
  layout = state_lib.build_state_layout(model, tx, partitioner, shapes, seed=0)
  state = layout.init_fn()
  train_step = step_lib.make_train_step(model=model, objective=objective, tx=tx,
                                        schedule=schedule, partitioner=partitioner,
                                        shardings=layout.shardings)
  losses = []
  for batch in _batches(1) * num_steps:  # one batch, repeated: its loss must go down
    batch = {k: jax.device_put(v, partitioner.batch_sharding()) for k, v in batch.items()}
    state, metrics = train_step(state, batch)
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state.params), state


@pytest.mark.parametrize("objective", [objectives.IQLearn(td_weight=0.5, gamma=0.9),
                                       objectives.MLE()], ids=["iqlearn", "mle"])
def test_sharded_step_equals_single_device(objective):
  devices = jax.devices()
  assert len(devices) == 8, "tests/conftest.py must simulate 8 CPU devices"
  ref_losses, ref_params, _ = _run((1, 1), devices[:1], objective)
  assert ref_losses[-1] < ref_losses[0]  # the updates do something
  for mesh_shape in [(4, 2), (8, 1)]:
    losses, params, state = _run(mesh_shape, devices, objective)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5, atol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 params, ref_params)
  # On the (8, 1) mesh the batch is split over 8 devices; parameters are replicated.
  kernel = state.params["decoder"]["logits_dense"]["kernel"]
  assert len(kernel.sharding.device_set) == 8


def test_rematerialised_sharded_step_equals_plain_single_device():
  """'full' remat (a custom VJP around nn.remat, `layers.remat`) on the (4, 2) mesh."""
  objective = objectives.IQLearn(td_weight=0.5, gamma=0.9)
  ref_losses, ref_params, _ = _run((1, 1), jax.devices()[:1], objective)
  losses, params, _ = _run((4, 2), jax.devices(), objective, remat_policy="full")
  np.testing.assert_allclose(losses, ref_losses, rtol=2e-5, atol=2e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               params, ref_params)


def test_model_axis_shards_parameters():
  _, _, state = _run((4, 2), jax.devices(), objectives.MLE(), num_steps=1)
  kernel = state.params["decoder"]["logits_dense"]["kernel"]  # (embed, vocab): vocab->model
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")
  assert kernel.addressable_shards[0].data.shape == (kernel.shape[0], VOCAB // 2)


def test_step_donates_and_advances():
  losses, _, state = _run((1, 1), jax.devices()[:1], objectives.MLE(), num_steps=2)
  assert int(state.step) == 2
  assert all(np.isfinite(losses))
