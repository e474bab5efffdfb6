"""ops.dot_last (every Dense layer): jnp.dot's values; on a CPU without the transposed gradient
copies XLA writes for a 3-D product."""
import re

import jax
import jax.numpy as jnp
import numpy as np

from irl_lm import ops
from irl_lm.cpu import xla


def _operands(shape_x, shape_k, seed=0):
  rs = np.random.RandomState(seed)
  return (jnp.asarray(rs.randn(*shape_x).astype(np.float32)),
          jnp.asarray(rs.randn(*shape_k).astype(np.float32)))


def test_dot_last_equals_jnp_dot_values_and_gradients():
  for shape_x in [(5, 32), (4, 48, 32), (2, 3, 7, 32)]:
    x, k = _operands(shape_x, (32, 64))
    np.testing.assert_allclose(ops.dot_last(x, k), jnp.dot(x, k), rtol=1e-6, atol=1e-5)
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1))(x, k)
             for f in (ops.dot_last, jnp.dot)]
    for got, want in zip(*grads):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _copies_in_backward(x, k):
  def loss(x, k):
    y = ops.dot_last(x, k)
    return jnp.sum(jnp.tanh(y) * y)

  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, k).compile().as_text()
  return re.findall(r"= (\S+) (?:copy|transpose)\(", hlo)


def test_dot_last_backward_writes_no_transposed_copy_on_a_cpu():
  """The reason for the CPU rewrite: XLA CPU lays out the weight gradient of a 3-D product with
  a copy of the output gradient in transposed layout ([64, 4, 48] here) per product."""
  assert jax.default_backend() == "cpu"
  x, k = _operands((4, 48, 32), (32, 64))
  assert _copies_in_backward(x, k) == []
  with xla.without("dot"):
    assert _copies_in_backward(x, k) != []
