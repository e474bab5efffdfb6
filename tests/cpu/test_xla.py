"""irl_lm.cpu.xla: which rewrites apply, and switching them off."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irl_lm import ops
from irl_lm.cpu import xla


def test_every_rewrite_applies_on_a_cpu_and_without_switches_off_only_the_named_ones():
  assert jax.default_backend() == "cpu"
  assert all(xla.applies(name) for name in xla.REWRITES)
  with xla.without("dot"):
    assert [xla.applies(name) for name in xla.REWRITES] == [False, True, True, True]
    with xla.without():
      assert not any(xla.applies(name) for name in xla.REWRITES)
    assert not xla.applies("dot") and xla.applies("remat")
  assert all(xla.applies(name) for name in xla.REWRITES)


def test_an_unknown_rewrite_is_one_clear_error():
  with pytest.raises(ValueError, match="'softmax' is not a CPU rewrite; choose one of dot"):
    xla.applies("softmax")
  with pytest.raises(ValueError, match="'dots' is not a CPU rewrite"):
    with xla.without("dots"):
      pass


def test_argmax_and_categorical_are_jax_s_without_the_rewrites():
  """Off the CPU path the ops are jax's primitives, and both paths give the same indices."""
  rs = np.random.RandomState(4)
  logits = jnp.asarray(rs.randn(6, 300).astype(np.float32) * 3)
  key = jax.random.key(5)
  def traced():  # new functions, so that jax.jit traces them afresh
    argmax, categorical = jax.jit(lambda z: ops.argmax(z)), jax.jit(lambda k, z: ops.categorical(k, z))
    return (argmax(logits), categorical(key, logits)), argmax.lower(logits).as_text()

  rewritten, program = traced()
  with xla.without("argmax", "gumbel"):
    primitive, primitive_program = traced()
  assert primitive_program != program
  for got, want in zip(rewritten, primitive):
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype == jnp.int32


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey])
@pytest.mark.parametrize("shape", [(8, 32128), (3, 5), (2, 3, 7), (11,), ()])
def test_gumbel_unrolled_equals_jax_random_gumbel_bit_for_bit(make_key, shape):
  for seed in (0, 1, 2 ** 31 + 5):
    for key in (make_key(seed), jax.random.fold_in(make_key(seed), 17)):
      got = np.asarray(jax.jit(xla.gumbel_unrolled, static_argnums=1)(key, shape))
      want = np.asarray(jax.random.gumbel(key, shape, jnp.float32))
      assert got.shape == shape and got.dtype == np.float32
      np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_gumbel_unrolled_is_jax_s_for_other_prng_implementations_and_dtypes():
  key = jax.random.key(4, impl="rbg")
  np.testing.assert_array_equal(xla.gumbel_unrolled(key, (4, 9)), jax.random.gumbel(key, (4, 9)))
  key = jax.random.key(5)
  got = xla.gumbel_unrolled(key, (4, 9), jnp.bfloat16)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(got, jax.random.gumbel(key, (4, 9), jnp.bfloat16))


def test_gumbel_unrolled_has_no_loop_where_jax_s_cpu_lowering_has_one():
  key = jax.random.key(0)
  ours = jax.jit(xla.gumbel_unrolled, static_argnums=1).lower(key, (8, 512)).compile().as_text()
  theirs = jax.jit(jax.random.gumbel, static_argnums=1).lower(key, (8, 512)).compile().as_text()
  assert " while(" not in ours and " while(" in theirs
