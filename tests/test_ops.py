"""irl_lm.ops: the same indices as jnp.argmax / jax.random.categorical, bit for bit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

from irl_lm import ops


@pytest.mark.parametrize("shape", [(8, 4096), (3, 5), (4, 7, 9)])
def test_argmax_equals_jnp_argmax_on_every_axis(shape):
  rs = np.random.RandomState(0)
  # Rounded values, so that many rows hold ties.
  x = jnp.asarray(np.round(rs.randn(*shape), 1).astype(np.float32))
  for axis in range(-len(shape), len(shape)):
    np.testing.assert_array_equal(jax.jit(ops.argmax, static_argnums=1)(x, axis),
                                  jnp.argmax(x, axis))


def test_argmax_ties_nan_and_inf_as_jnp_argmax():
  nan, inf = np.nan, np.inf
  x = jnp.array([[1., 3., 3., 0.],       # tie: the first
                 [nan, 1., nan, 5.],     # NaN: the first NaN
                 [-inf, -inf, -inf, -inf],
                 [2., 9., nan, 9.],
                 [-inf, 0., -inf, inf]], jnp.float32)
  got = jax.jit(ops.argmax)(x)
  np.testing.assert_array_equal(got, [1, 0, 0, 2, 3])
  np.testing.assert_array_equal(got, jnp.argmax(x, -1))
  assert got.dtype == jnp.int32


def test_argmax_with_a_given_maximum():
  x = jnp.asarray(np.random.RandomState(1).randn(6, 11).astype(np.float32))
  np.testing.assert_array_equal(ops.argmax(x, max_value=jnp.max(x, -1)), jnp.argmax(x, -1))


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey])
def test_categorical_equals_jax_random_categorical(make_key):
  rs = np.random.RandomState(2)
  logits = rs.randn(16, 300).astype(np.float32) * 3
  logits[:, ::7] = -np.inf  # impossible tokens are never drawn
  logits = jnp.asarray(logits)
  draw = jax.jit(ops.categorical, static_argnums=2)
  for seed in range(10):
    key = make_key(seed)
    got = draw(key, logits, -1)
    np.testing.assert_array_equal(got, jax.random.categorical(key, logits, axis=-1))
    assert not np.any(np.asarray(got) % 7 == 0)
  key = make_key(3)
  np.testing.assert_array_equal(draw(key, logits.T, 0),
                                jax.random.categorical(key, logits.T, axis=0))


def test_categorical_frequencies_follow_the_softmax():
  probs = np.array([0.5, 0.3, 0.15, 0.05])
  logits = jnp.tile(jnp.log(jnp.asarray(probs, jnp.float32)), (20000, 1))
  draws = np.asarray(jax.jit(ops.categorical)(jax.random.key(0), logits))
  freq = np.bincount(draws, minlength=4) / len(draws)
  # 20000 draws: the standard error of each frequency is <= 0.0036.
  np.testing.assert_allclose(freq, probs, atol=0.015)


def test_softmax_equals_jax_nn_softmax_values_and_gradients():
  rs = np.random.RandomState(3)
  x = rs.randn(2, 3, 5, 17).astype(np.float32) * 4
  x[..., :4] = -1e10  # masked keys, as layers.NEG_INF
  x = jnp.asarray(x)
  cotangent = jnp.asarray(rs.randn(*x.shape).astype(np.float32))
  np.testing.assert_allclose(ops.softmax(x), jax.nn.softmax(x, axis=-1), rtol=1e-6, atol=1e-7)
  got = jax.grad(lambda x: jnp.sum(ops.softmax(x) * cotangent))(x)
  want = jax.grad(lambda x: jnp.sum(jax.nn.softmax(x, axis=-1) * cotangent))(x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Hand-computed: d softmax / dx = y (g - <g, y>).
  y = jax.nn.softmax(x, axis=-1)
  np.testing.assert_allclose(got, y * (cotangent - jnp.sum(cotangent * y, -1, keepdims=True)),
                             rtol=1e-5, atol=1e-6)


def test_softmax_backward_keeps_only_its_output(capsys):
  """ops.softmax's backward pass keeps only its output (one [4, 8, 8] residual besides the
  argument c), never more than jax.nn.softmax's autodiff (which on jax 0.10 also keeps
  exp(x - max) and the sums; newer jax versions keep only the output by default)."""
  x, c = jnp.ones((4, 8, 8)), jnp.full((4, 8, 8), 2.0)
  print_saved_residuals(lambda x, c: jnp.sum(ops.softmax(x) * c), x, c)
  kept = capsys.readouterr().out.strip().splitlines()
  assert len(kept) == 2, kept  # c (for the product's gradient) and the softmax's output
  assert sum("_softmax_fwd" in line for line in kept) == 1, kept
  print_saved_residuals(lambda x, c: jnp.sum(jax.nn.softmax(x, axis=-1) * c), x, c)
  assert len(capsys.readouterr().out.strip().splitlines()) >= len(kept)
