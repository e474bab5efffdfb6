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
    assert [xla.applies(name) for name in xla.REWRITES] == [False, True, True]
    with xla.without():
      assert not any(xla.applies(name) for name in xla.REWRITES)
    assert not xla.applies("dot") and xla.applies("remat")
  assert all(xla.applies(name) for name in xla.REWRITES)


def test_an_unknown_rewrite_is_one_clear_error():
  with pytest.raises(ValueError, match="'gumbel' is not a CPU rewrite; choose one of dot"):
    xla.applies("gumbel")
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
  with xla.without("argmax"):
    primitive, primitive_program = traced()
  assert primitive_program != program
  for got, want in zip(rewritten, primitive):
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype == jnp.int32

