"""LoRA adapters: a fresh adapter changes nothing, merging is exact, training moves only the
adapters (the optimiser holds no state for the base), and a LoRA run exports merged."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from irl_lm import decoding
from irl_lm.checkpoints import formats
from irl_lm.jobs import convert, train as train_job
from irl_lm.models import decoder_only, lora, t5
from irl_lm.partitioning import Partitioner
from irl_lm.training.settings import CheckpointSettings, EvalSettings, RunSettings, TrainSettings
from irl_lm.training import objectives

B, L, T, V = 4, 8, 6, 64


def _decoder():
  return decoder_only.DecoderOnlyModel(decoder_only.decoder_only_config(
      "tiny", vocab_size=V, activation_dtype=jnp.float32, num_layers=1))


def _t5():
  return t5.EncoderDecoderModel(t5.t5_1_1_config(
      "tiny", vocab_size=V, activation_dtype=jnp.float32, num_encoder_layers=1,
      num_decoder_layers=1))


def _batch(model, seed=0):
  rs = np.random.RandomState(seed)
  prompts = rs.randint(3, V, (B, L)).astype(np.int32)
  prompts[:, L - 2:] = 0
  targets = rs.randint(3, V, (B, T)).astype(np.int32)
  targets[:, -1] = 1
  return jax.device_get(model.teacher_forcing_batch(jnp.asarray(prompts), jnp.asarray(targets)))


def _lora_setup(make):
  """(base model, LoraModel over it, fresh params (adapters at init), base_model's batch)."""
  base_model = make()
  model = lora.LoraModel(base_model, rank=4, alpha=8.0)
  shapes = base_model.input_shapes(B, {"inputs": L, "targets": T})
  return base_model, model, model.init(jax.random.key(0), shapes), _batch(base_model)


def _random_adapters(params):
  """params with every adapter matrix drawn at random (std 0.1), so merging changes kernels."""
  return {**params, "lora": jax.tree.map(
      lambda x: jax.random.normal(jax.random.key(1), x.shape) * 0.1, params["lora"])}


@pytest.mark.parametrize("make", [_decoder, _t5], ids=["decoder_only", "t5"])
def test_fresh_adapters_change_nothing_and_merging_is_exact(make):
  base_model, model, params, batch = _lora_setup(make)
  np.testing.assert_array_equal(model.logits(params, batch),
                                base_model.logits(params["base"], batch))
  # Random adapters: the model computes the base model on the merged kernels.
  params = _random_adapters(params)
  merged = model.merge(params)
  np.testing.assert_allclose(model.logits(params, batch), base_model.logits(merged, batch),
                             rtol=1e-6, atol=1e-6)
  flat_lora = traverse_util.flatten_dict(params["lora"])
  flat_base, flat_merged = (traverse_util.flatten_dict(params["base"]),
                            traverse_util.flatten_dict(merged))
  path = sorted(p[:-1] for p in flat_lora if p[-1] == "a")[0]
  a, b = flat_lora[path + ("a",)], flat_lora[path + ("b",)]
  np.testing.assert_allclose(flat_merged[path + ("kernel",)],
                             flat_base[path + ("kernel",)] + 2.0 * a @ b, rtol=1e-6)
  assert a.shape[1] == b.shape[0] == 4
  # Every attention and MLP kernel got an adapter; nothing else did.
  adapted = {p[-2] for p in flat_lora}
  assert adapted <= set(lora.DEFAULT_TARGETS) and {"query", "wo"} <= adapted
  shapes = base_model.input_shapes(B, {"inputs": L, "targets": T})
  axes = model.param_logical_axes(shapes)
  assert jax.tree.structure(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)) \
      == jax.tree.structure(jax.eval_shape(lambda r: model.init(r, shapes), jax.random.key(0)))


def _subjaxprs(eqn):
  for value in eqn.params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(v, jax.extend.core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jax.extend.core.Jaxpr):
        yield v


def _count_dots(jaxpr) -> int:
  return sum(1 if e.primitive.name == "dot_general" else sum(map(_count_dots, _subjaxprs(e)))
             for e in jaxpr.eqns)


def _while_body_dots(jaxpr) -> int:
  """Number of dot_generals inside the first while loop's body of a jaxpr (searched nested)."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "while":
      return _count_dots(eqn.params["body_jaxpr"].jaxpr)
    for sub in _subjaxprs(eqn):
      try:
        return _while_body_dots(sub)
      except LookupError:
        pass
  raise LookupError("no while loop in the jaxpr")


@pytest.mark.parametrize("make", [_decoder, _t5], ids=["decoder_only", "t5"])
def test_sampling_merges_adapters_once_per_call_not_per_step(make):
  base_model, model, params, batch = _lora_setup(make)
  params = _random_adapters(params)
  prompts = base_model.prompts(batch)

  def sample(m, p):
    return decoding.temperature_sample(m, p, prompts, jax.random.key(2), max_decode_length=T,
                                       temperature=1.0)

  got, want = sample(model, params), sample(base_model, model.merge(params))
  np.testing.assert_array_equal(got.tokens, want.tokens)
  np.testing.assert_allclose(got.log_probs, want.log_probs, rtol=1e-5, atol=1e-5)
  # The loop body is the base model's: no a @ b products left inside it.
  lora_jaxpr = jax.make_jaxpr(lambda p: sample(model, p))(params).jaxpr
  base_jaxpr = jax.make_jaxpr(lambda p: sample(base_model, p))(model.merge(params)).jaxpr
  assert _while_body_dots(lora_jaxpr) == _while_body_dots(base_jaxpr) > 0


def test_bad_targets_are_refused_clearly():
  model = lora.LoraModel(_decoder(), targets=("nope",))
  with pytest.raises(ValueError, match="no 2-D kernel of a sub-layer named nope"):
    model.init(jax.random.key(0), {"decoder_input_tokens": (1, 4)})


def _train(run_dir, model, **overrides):
  batch = _batch(model)
  return train_job.train(str(run_dir), _settings(model, **overrides),
                         batches=iter(lambda: batch, None))


def _settings(model, num_train_steps=4, init_from=None):
  return RunSettings(
      model=model, task="unused", feature_lengths={"inputs": L, "targets": T},
      objective=objectives.IQLearn(td_weight=0.1),
      partitioner=Partitioner((1, 1), devices=tuple(jax.devices()[:1])), init_from=init_from,
      training=TrainSettings(num_train_steps=num_train_steps, batch_size=B,
                             optimizer=lambda schedule: optax.adam(schedule),
                             schedule=lambda total_steps: optax.constant_schedule(1e-2),
                             log_every=1, tensorboard=False),
      evaluation=EvalSettings(examples=0), checkpoints=CheckpointSettings(every=1000))


@pytest.mark.slow
def test_lora_run_trains_only_adapters_and_exports_merged(tmp_path):
  base_run = tmp_path / "base"
  _train(base_run, _decoder(), num_train_steps=2)
  model = lora.LoraModel(_decoder(), rank=4, alpha=8.0)
  summary = _train(tmp_path / "lora", model, init_from=str(base_run))
  losses = [h["loss"] for h in summary["history"]]
  assert losses[-1] < losses[0], losses
  base_params = formats.load_params(
      str(base_run), jax.eval_shape(lambda r: _decoder().init(r, {"decoder_input_tokens": (1, 4)}),
                                    jax.random.key(0)))
  abstract = jax.eval_shape(lambda r: model.init(r, {"decoder_input_tokens": (1, 4)}),
                            jax.random.key(0))
  trained = formats.load_params(str(tmp_path / "lora"), abstract)
  # The base is exactly the imported run's; the adapters moved.
  jax.tree.map(np.testing.assert_array_equal, trained["base"], base_params)
  assert any(float(np.abs(b).max()) > 0 for p, b in traverse_util.flatten_dict(
      trained["lora"]).items() if p[-1] == "b")
  # The optimiser keeps moments for the adapters only.
  from irl_lm.jobs import common  # pylint: disable=g-import-not-at-top
  layout, _, _ = common.train_state_layout(_settings(model))
  opt_size = sum(x.size for x in jax.tree.leaves(layout.abstract.opt_state))
  lora_size = sum(x.size for x in jax.tree.leaves(abstract["lora"]))
  assert opt_size <= 2 * lora_size + 16  # Adam's two moments (+ step counters)
  # Export: one plain checkpoint with the adapters folded in.
  out = convert.convert(str(tmp_path / "lora"), str(tmp_path / "hf"), format="hf")
  assert out["family"] == "llama"
  exported = formats.load_params(str(tmp_path / "hf"), jax.eval_shape(
      lambda r: _decoder().init(r, {"decoder_input_tokens": (1, 4)}), jax.random.key(0)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               exported, model.merge(trained))
