"""The default activation dtype follows the backend: float32 on CPUs, bfloat16 on GPUs and TPUs."""
import jax
import jax.numpy as jnp
import pytest

from irl_lm.models import decoder_only, precision, t5


def test_cpu_configs_default_to_float32():
  assert jax.default_backend() == "cpu"
  assert precision.default_activation_dtype() == jnp.float32
  assert t5.t5_1_1_config("base").activation_dtype == jnp.float32
  assert decoder_only.decoder_only_config("1b").activation_dtype == jnp.float32


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_accelerator_configs_default_to_bfloat16(monkeypatch, backend):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert precision.default_activation_dtype() == jnp.bfloat16
  assert t5.T5Config().activation_dtype == jnp.bfloat16
  assert decoder_only.DecoderOnlyConfig().activation_dtype == jnp.bfloat16
  # A binding still wins.
  assert t5.t5_1_1_config("tiny", activation_dtype=jnp.float32).activation_dtype == jnp.float32
