"""Mesh construction and the clear errors for meshes/batches that do not fit."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from irl_lm.partitioning import Partitioner, PartitioningError, make_mesh


def test_mesh_shapes():
  assert dict(make_mesh((-1, 2)).shape) == {"data": 4, "model": 2}
  assert dict(make_mesh((8, 1)).shape) == {"data": 8, "model": 1}
  assert dict(make_mesh((1, -1), jax.devices()[:4]).shape) == {"data": 1, "model": 4}


@pytest.mark.parametrize("shape", [(3, 1), (-1, 3), (4, 4), (-1, -1), (0, 8)])
def test_mesh_that_does_not_divide_devices_is_refused(shape):
  with pytest.raises(PartitioningError, match="mesh_shape"):
    make_mesh(shape)


def test_batch_not_divisible_by_data_axis():
  partitioner = Partitioner((4, 2))
  partitioner.check_batch_size(12)
  with pytest.raises(PartitioningError, match="batch size 10 is not divisible.*data axis \\(4\\)"):
    partitioner.check_batch_size(10)


def test_logical_rules():
  default = Partitioner((4, 2))
  assert default.logical_to_spec(P("vocab", "embed"), (64, 16)) == P("model", None)
  assert default.logical_to_spec(P("embed", "mlp"), (16, 32)) == P(None, "model")
  # A dimension that does not divide its mesh axis is replicated rather than failing.
  assert default.logical_to_spec(P("heads", "relpos_buckets"), (3, 32)) == P(None, None)
  fsdp = Partitioner((4, 2), fully_sharded_params=True)
  assert fsdp.logical_to_spec(P("vocab", "embed"), (64, 16)) == P("model", "data")
