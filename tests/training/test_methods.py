"""Every method of the paper trains through the train job: MLE, MLE + entropy, offline IQLearn,
online IQLearn and GAIL, on one device and on the simulated 8-device mesh."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irl_lm.models import t5
from irl_lm.checkpoints import formats as checkpoint_formats, manager as checkpoints
from irl_lm.training import objectives, state as state_lib
from irl_lm.jobs import train as train_job
from irl_lm.partitioning import Partitioner
from irl_lm.training.settings import CheckpointSettings, EvalSettings, RunSettings, TrainSettings
from tests.training.test_step import B, L, T, VOCAB, _batches

# The tiny T5 with one layer per stack: these tests are about the methods, and compiling the
# online steps (a decode loop plus up to four forward passes) dominates their time.
TINY = t5.t5_1_1_config("tiny", vocab_size=VOCAB, activation_dtype=jnp.float32,
                        num_encoder_layers=1, num_decoder_layers=1, emb_dim=64, mlp_dim=128,
                        num_heads=2)
DISC = {"emb_dim": 32, "num_heads": 2, "head_dim": 16, "mlp_dim": 64, "num_encoder_layers": 1,
        "num_decoder_layers": 1}
STEPS = 4
COMMON_METRICS = ("loss", "nll", "td_loss", "reward_mean", "entropy", "grad_norm")

METHODS = {
    "mle": objectives.MLE(),
    "mle_entropy": objectives.MLE(entropy_weight=0.1),
    "iqlearn": objectives.IQLearn(td_weight=0.5, gamma=0.9),
    "iqlearn_online": objectives.IQLearnOnline(td_weight=0.5, gamma=0.9, online_mix=0.25),
    "gail": objectives.GAIL(kl_weight=0.1, mle_weight=1.0, entropy_weight=0.01,
                            discriminator_overrides=DISC, discriminator_learning_rate=3e-3),
}
EXTRA_METRICS = {
    "mle_entropy": ("value_mean",),
    "iqlearn_online": ("reward_mean_samples", "td_loss_samples", "value_diff_samples",
                       "entropy_samples"),
    "gail": ("reward_mean_samples", "disc_loss", "disc_accuracy", "gail_reward_mean",
             "gail_reward_std", "gail_reward_min", "gail_reward_max", "kl", "pg_loss"),
}


def _train(run_dir, objective, mesh_shape, num_steps=STEPS, **overrides):
  batch = _batches(1)[0]  # one batch, repeated: it must be learnt
  devices = tuple(jax.devices()[:mesh_shape[0] * mesh_shape[1]])
  run = RunSettings(
      model=t5.EncoderDecoderModel(TINY), task="unused",
      feature_lengths={"inputs": L, "targets": T}, objective=objective, partitioner=Partitioner(mesh_shape, devices=devices),
      training=TrainSettings(num_train_steps=num_steps, batch_size=B,
                             optimizer=lambda schedule: optax.adam(schedule),
                             schedule=lambda total_steps: optax.constant_schedule(3e-3),
                             log_every=1, tensorboard=False),
      evaluation=EvalSettings(examples=0), checkpoints=CheckpointSettings(every=1000))
  return train_job.train(str(run_dir), dataclasses.replace(run, **overrides),
                         batches=iter(lambda: batch, None))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{(method, mesh): (training summary, run directory)}, trained once for the tests below.

  GAIL starts from the 1-device MLE run's checkpoint (`init_from`), as the paper's GAIL does.
  """
  out = {}
  for name, objective in METHODS.items():
    for mesh in [(1, 1), (8, 1)]:
      run_dir = tmp_path_factory.mktemp(f"{name}_{mesh[0]}")
      extra = {"init_from": str(out["mle", (1, 1)][1])} if name == "gail" else {}
      out[name, mesh] = (_train(run_dir, objective, mesh, **extra), run_dir)
  return out


@pytest.mark.parametrize("mesh", [(1, 1), (8, 1)], ids=["1dev", "8dev"])
@pytest.mark.parametrize("name", list(METHODS))
def test_method_trains_and_logs_its_metrics(runs, name, mesh):
  summary, _ = runs[name, mesh]
  history = summary["history"]
  assert [h["step"] for h in history] == list(range(1, STEPS + 1))
  for record in history:
    for key in COMMON_METRICS + EXTRA_METRICS.get(name, ()):
      assert np.isfinite(record[key]), (key, record)
  losses = [h["loss"] for h in history]
  assert losses[-1] < losses[0] - 0.1, losses
  if name == "gail":
    # The discriminator learns to tell data from samples (in 4 steps it outpaces the policy, so
    # the samples' reward falls), and its rewards separate the samples.
    assert history[-1]["disc_loss"] < history[0]["disc_loss"]
    assert history[-1]["gail_reward_std"] > 0
  else:
    assert history[-1]["nll"] < history[0]["nll"] - 0.1


def test_entropy_bonus_changes_mle(runs):
  mle, _ = runs["mle", (1, 1)]
  ent, _ = runs["mle_entropy", (1, 1)]
  # Same first forward pass: the loss differs by exactly -beta * entropy.
  first, first_ent = mle["history"][0], ent["history"][0]
  np.testing.assert_allclose(first_ent["nll"], first["nll"], rtol=1e-6)
  np.testing.assert_allclose(first_ent["loss"], first["nll"] - 0.1 * first["entropy"], rtol=1e-6)
  assert ent["history"][-1]["entropy"] > mle["history"][-1]["entropy"]


def test_gail_is_mesh_independent_and_learns_a_discriminator(runs):
  # Every input is sampled (sample_fraction = 1) and the sampling keys do not depend on the
  # sharding, so the 8-device run repeats the 1-device one, discriminator included.
  one, _ = runs["gail", (1, 1)]
  eight, _ = runs["gail", (8, 1)]
  for a, b in zip(one["history"], eight["history"]):
    for key in ("loss", "disc_loss", "kl", "gail_reward_mean"):
      np.testing.assert_allclose(b[key], a[key], rtol=2e-3, atol=2e-4, err_msg=key)
  history = one["history"]
  assert history[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # starts at the reference policy
  assert history[-1]["kl"] > 1e-4
  assert history[-1]["disc_loss"] < history[0]["disc_loss"]
  assert history[-1]["disc_accuracy"] > 0.5
  # It starts from the MLE run (init_from): its first nll is the MLE run's last, not a random
  # model's.
  mle, _ = runs["mle", (1, 1)]
  assert history[0]["nll"] < mle["history"][0]["nll"] - 1.0


def _layout(objective):
  shapes = {"encoder_input_tokens": (B, L), "decoder_input_tokens": (B, T)}
  return state_lib.build_state_layout(
      t5.EncoderDecoderModel(TINY), optax.adam(optax.constant_schedule(3e-3)),
      Partitioner((1, 1), devices=tuple(jax.devices()[:1])), shapes, seed=0,
      objective=objective)


def test_gail_checkpoint_holds_the_mle_reference_and_a_trained_discriminator(runs):
  _, gail_dir = runs["gail", (1, 1)]
  _, mle_dir = runs["mle", (1, 1)]
  layout = _layout(METHODS["gail"])
  ckpt = checkpoints.Checkpointer(str(gail_dir / "checkpoints"))
  assert ckpt.all_steps() == [STEPS]
  state = jax.device_get(ckpt.restore(layout.abstract, layout.shardings))
  ckpt.close()
  assert set(state.extra) == {"disc_params", "disc_opt_state", "ref_params"}
  mle_params = checkpoint_formats.load_params(str(mle_dir), layout.abstract.params)
  jax.tree.map(np.testing.assert_array_equal, state.extra["ref_params"], mle_params)
  assert max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                                          state.params, mle_params))) > 1e-4
  # The discriminator's optimiser state moved with it: Adam took one step per train step.
  adam_counts = [int(x) for x in jax.tree.leaves(state.extra["disc_opt_state"])
                 if np.ndim(x) == 0]
  assert adam_counts and set(adam_counts) == {STEPS}
  # Without a KL term there is no frozen copy of the policy in the state.
  no_kl = _layout(objectives.GAIL(kl_weight=0.0, discriminator_overrides=DISC))
  assert set(no_kl.abstract.extra) == {"disc_params", "disc_opt_state"}


def test_online_iqlearn_samples_its_share_of_the_batch(runs):
  # online_mix 0.25 of 8 rows: 2 rows on one device, 1 per data shard (8) on the 8-device mesh.
  one, _ = runs["iqlearn_online", (1, 1)]
  eight, _ = runs["iqlearn_online", (8, 1)]
  assert 0 < one["history"][0]["num_sample_tokens"] <= 2 * T
  assert 2 * T < eight["history"][0]["num_sample_tokens"] <= 8 * T


def test_separate_sampler_gives_the_same_run_as_sampling_in_step(runs, tmp_path):
  in_step, _ = runs["iqlearn_online", (1, 1)]
  objective = dataclasses.replace(METHODS["iqlearn_online"], sample_in_step=False)
  two_stage = _train(tmp_path, objective, (1, 1))
  for a, b in zip(in_step["history"], two_stage["history"]):
    for key in ("loss", "num_sample_tokens", "reward_mean_samples"):
      np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=key)


def test_num_sampled_rows_rounds_up_per_data_shard():
  assert objectives.num_sampled_rows(32, 0.1) == 4
  assert objectives.num_sampled_rows(32, 0.1, 8) == 8
  assert objectives.num_sampled_rows(24, 0.5, 8) == 16
  assert objectives.num_sampled_rows(8, 1.0, 8) == 8
  assert objectives.num_sampled_rows(8, 0.0, 2) == 2  # at least one row per shard
  with pytest.raises(ValueError, match="fraction"):
    objectives.num_sampled_rows(8, 1.5)


def test_gail_run_can_be_restored_for_inference(runs):
  """`infer`/`evaluate` rebuild the run's state with its objective (GAIL has extra state)."""
  from irl_lm.jobs import common as jobs_common
  summary, gail_dir = runs["gail", (1, 1)]
  shapes = {"encoder_input_tokens": (B, L), "decoder_input_tokens": (B, T)}
  common = dict(model=t5.EncoderDecoderModel(TINY),
                tx=optax.adam(optax.constant_schedule(3e-3)),
                partitioner=Partitioner((1, 1), devices=tuple(jax.devices()[:1])),
                input_shapes=shapes)
  params, _, step = jobs_common.restore_params(str(gail_dir), objective=METHODS["gail"], **common)
  assert step == summary["final_step"] == STEPS
  expected = checkpoint_formats.load_params(str(gail_dir), _layout(METHODS["gail"]).abstract.params)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), expected)
  with pytest.raises(checkpoints.CheckpointError, match="unexpected in checkpoint: extra/"):
    jobs_common.restore_params(str(gail_dir), **common)  # without the objective: refused clearly
