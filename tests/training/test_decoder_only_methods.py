"""Every method trains the decoder-only family through the train job: MLE, MLE + entropy,
offline and online IQLearn, and GAIL (with a decoder-only discriminator); MLE and IQLearn on 8
devices equal 1 device."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from irl_lm.jobs import train as train_job
from irl_lm.models import decoder_only
from irl_lm.partitioning import Partitioner
from irl_lm.training.settings import CheckpointSettings, EvalSettings, RunSettings, TrainSettings
from irl_lm.training import objectives

VOCAB = 64
B, L, T = 8, 12, 10
CONFIG = decoder_only.decoder_only_config(
    "tiny", vocab_size=VOCAB, activation_dtype=jnp.float32, emb_dim=64, num_heads=4,
    num_kv_heads=2, head_dim=16, mlp_dim=128, num_layers=1)
MODEL = decoder_only.DecoderOnlyModel(CONFIG)
DISC = {"emb_dim": 32, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16, "mlp_dim": 64,
        "num_layers": 1}
STEPS = 4

METHODS = {
    "mle": objectives.MLE(),
    "mle_entropy": objectives.MLE(entropy_weight=0.1),
    "iqlearn": objectives.IQLearn(td_weight=0.5, gamma=0.9),
    "iqlearn_online": objectives.IQLearnOnline(td_weight=0.5, gamma=0.9, online_mix=0.25),
    "gail": objectives.GAIL(kl_weight=0.1, mle_weight=1.0, entropy_weight=0.01,
                            discriminator_overrides=DISC, discriminator_learning_rate=3e-3),
}


def _batch(seed: int = 0) -> dict[str, np.ndarray]:
  """Prompts of different lengths (right-padded to L) and EOS-terminated targets, as the
  model's own features (the same function the online objectives use for samples)."""
  rs = np.random.RandomState(seed)
  prompt_lengths = rs.randint(2, L + 1, size=(B,))
  prompts = rs.randint(3, VOCAB, size=(B, L)).astype(np.int32)
  prompts = np.where(np.arange(L)[None] < prompt_lengths[:, None], prompts, 0)
  targets = rs.randint(3, VOCAB, size=(B, T)).astype(np.int32)
  lengths = rs.randint(3, T + 1, size=(B,))
  targets[np.arange(B), lengths - 1] = 1  # EOS
  return jax.device_get(MODEL.teacher_forcing_batch(jnp.asarray(prompts), jnp.asarray(targets)))


def _train(run_dir, objective, mesh_shape, **overrides):
  batch = _batch()
  devices = tuple(jax.devices()[:mesh_shape[0] * mesh_shape[1]])
  run = RunSettings(
      model=MODEL, task="unused", feature_lengths={"inputs": L, "targets": T},
      objective=objective, partitioner=Partitioner(mesh_shape, devices=devices),
      training=TrainSettings(num_train_steps=STEPS, batch_size=B,
                             optimizer=lambda schedule: optax.adam(schedule),
                             schedule=lambda total_steps: optax.constant_schedule(3e-3),
                             log_every=1, tensorboard=False),
      evaluation=EvalSettings(examples=0), checkpoints=CheckpointSettings(every=1000))
  return train_job.train(str(run_dir), dataclasses.replace(run, **overrides),
                         batches=iter(lambda: batch, None))


def test_batch_is_the_split_layout():
  """Prompts [B, L] and continuation columns [B, T]: losses see only the T target columns."""
  batch = _batch()
  assert batch["prompt_tokens"].shape == (B, L)
  for key in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights"):
    assert batch[key].shape == (B, T), key
  last_prompt = [row[row != 0][-1] for row in batch["prompt_tokens"]]
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 0], last_prompt)
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:],
                                batch["decoder_target_tokens"][:, :-1])


# Every method on one device; on 8 the two whose equality with 1 device is asserted (the
# family-independent sharding of every method is covered by tests/training/test_methods.py).
RUNS = [(name, (1, 1)) for name in METHODS] + [("mle", (8, 1)), ("iqlearn", (8, 1))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  out = {}
  for name, mesh in RUNS:
    run_dir = tmp_path_factory.mktemp(f"dec_{name}_{mesh[0]}")
    extra = {"init_from": str(out["mle", (1, 1)][1])} if name == "gail" else {}
    out[name, mesh] = (_train(run_dir, METHODS[name], mesh, **extra), run_dir)
  return out


@pytest.mark.slow
@pytest.mark.parametrize("name,mesh", RUNS, ids=[f"{n}-{m[0]}dev" for n, m in RUNS])
def test_decoder_only_method_trains(runs, name, mesh):
  history = runs[name, mesh][0]["history"]
  assert [h["step"] for h in history] == list(range(1, STEPS + 1))
  for record in history:
    for key in ("loss", "nll", "grad_norm"):
      assert np.isfinite(record[key]), (key, record)
  losses = [h["loss"] for h in history]
  assert losses[-1] < losses[0] - 0.1, losses
  if name == "gail":
    assert history[-1]["disc_loss"] < history[0]["disc_loss"]
  else:
    assert history[-1]["nll"] < history[0]["nll"] - 0.1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mle", "iqlearn"])
def test_decoder_only_sharded_equals_unsharded(runs, name):
  one, eight = runs[name, (1, 1)][0]["history"], runs[name, (8, 1)][0]["history"]
  for a, b in zip(one, eight):
    for key in ("loss", "nll", "td_loss"):
      np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_decoder_only_iqlearn_without_td_is_mle(runs, tmp_path):
  mle = runs["mle", (1, 1)][0]["history"]
  zero_td = _train(tmp_path, objectives.IQLearn(td_weight=0.0, gamma=0.9), (1, 1))["history"]
  for a, b in zip(mle, zero_td):
    assert a["loss"] == b["loss"]


@pytest.mark.slow
def test_a_decoder_only_run_converts_with_its_recorded_config(runs, tmp_path):
  """Shapes cannot tell 4 heads of 16 from 1 of 64: the run records its model config, and
  conversion to Hugging Face uses it."""
  import json  # pylint: disable=g-import-not-at-top
  from irl_lm.checkpoints import formats  # pylint: disable=g-import-not-at-top
  from irl_lm.jobs import convert  # pylint: disable=g-import-not-at-top
  run_dir = runs["mle", (1, 1)][1]
  assert formats.config_from_checkpoint(str(run_dir)) == CONFIG
  summary = convert.convert(str(run_dir), str(tmp_path / "hf"), format="hf")
  assert summary["family"] == "llama" and summary["config"] == CONFIG
  hf = json.loads((tmp_path / "hf" / "config.json").read_text())
  assert (hf["num_attention_heads"], hf["num_key_value_heads"], hf["head_dim"]) == (4, 2, 16)
  back = formats.config_from_checkpoint(str(tmp_path / "hf"), activation_dtype=jnp.float32)
  assert back == CONFIG
