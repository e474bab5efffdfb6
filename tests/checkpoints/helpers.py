"""Shared by the checkpoint tests: a small T5 1.1 config and random parameters for it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from irl_lm.models import t5

SHAPES = {"encoder_input_tokens": (1, 1), "decoder_input_tokens": (1, 1)}
# Small but with every kind of parameter; J = 16 != E = 32 and 2 encoder vs 1 decoder layers,
# so a transposed or swapped kernel, or a mislabelled stack, changes a shape or a value.
CONFIG = t5.T5Config(vocab_size=64, emb_dim=32, num_heads=2, head_dim=8, num_encoder_layers=2,
                     num_decoder_layers=1, mlp_dim=48, activation_dtype=jnp.float32)


def abstract(config=CONFIG):
  model = t5.EncoderDecoderModel(config)
  return jax.eval_shape(lambda rng: model.init(rng, SHAPES), jax.random.key(0))


def random_params(config=CONFIG, seed=0):
  """Distinct random float32 values in every leaf (a swap or transpose cannot go unnoticed)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32),
                      abstract(config))


@pytest.fixture(scope="module")
def params():
  return random_params()


def assert_exact(expected, actual):
  flat_e = traverse_util.flatten_dict(expected, sep="/")
  flat_a = traverse_util.flatten_dict(jax.device_get(actual), sep="/")
  assert sorted(flat_e) == sorted(flat_a)
  for key, value in flat_e.items():
    assert flat_a[key].dtype == np.float32, key
    np.testing.assert_array_equal(flat_a[key], value, err_msg=key)


def bfloat16_rounded(tree):
  import ml_dtypes
  return jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float32), tree)
