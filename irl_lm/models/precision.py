"""The activation dtype a model config gets when none is given: bfloat16 on accelerators, float32 on
CPUs.

GPUs and TPUs run bfloat16 matmuls at several times their float32 rate (parameters and logits stay
float32 either way). CPUs have no such units: bfloat16 there is slower than float32 and rounds, so
CPU runs keep float32 and the numbers tests compare exactly.
"""
from typing import Any

import jax
import jax.numpy as jnp


def default_activation_dtype() -> Any:
  """`jnp.bfloat16` when jax's default backend is a GPU or TPU, else `jnp.float32`.

  Reads `jax.default_backend()`, which starts jax's backends: call it only after
  `jax.distributed.initialize` on multi-host runs (model configs are built after it).
  """
  return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
