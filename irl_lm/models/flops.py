"""Model FLOPs of a train step (counted analytically) and accelerators' peak FLOP/s, for the
model-FLOP utilisation (MFU) the trainer logs.

Matmuls only, 2 FLOPs per multiply-add, backward = 2 x forward; element-wise work, the optimiser
and (for online objectives) sampling are left out, as in the usual MFU definition.
`python -m benchmarks roofline` cross-checks the count with XLA's cost analysis.

Shapes: B batch, L input (prompt) length, T target length, E emb dim, J = H·D, J_kv = K·D,
F mlp dim, V vocabulary.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from irl_lm.models import decoder_only, t5


def forward_flops(config: Any, batch_size: int, feature_lengths: Mapping[str, int]) -> float:
  """Matmul FLOPs of one teacher-forced forward pass.

  T5, per encoder token and layer: q/k/v/o projections 8EJ, attention scores and mixing 4LJ,
  gated MLP 6EF; per decoder token and layer: self-attention 8EJ + 4TJ, cross-attention query
  and output 4EJ and 4LJ, MLP 6EF; per encoder token and decoder layer the cross keys and values
  4EJ; per decoder token the output layer 2EV. Decoder-only (unpacked split layout), per slot of
  the L + T and layer: projections 4EJ + 4EJ_kv, attention 4(L + T)J, MLP 6EF; the output layer
  over the T continuation columns only.
  """
  L, T = feature_lengths["inputs"], feature_lengths["targets"]
  E, F, V = config.emb_dim, config.mlp_dim, config.vocab_size
  J = config.num_heads * config.head_dim
  if isinstance(config, t5.T5Config):
    encoder = L * config.num_encoder_layers * (8 * E * J + 4 * L * J + 6 * E * F)
    decoder = T * config.num_decoder_layers * (12 * E * J + 4 * T * J + 4 * L * J + 6 * E * F)
    cross_kv = L * config.num_decoder_layers * 4 * E * J
    return float(batch_size * (encoder + decoder + cross_kv + T * 2 * E * V))
  if isinstance(config, decoder_only.DecoderOnlyConfig):
    S = L + T
    J_kv = config.num_kv_heads * config.head_dim
    layers = S * config.num_layers * (4 * E * J + 4 * E * J_kv + 4 * S * J + 6 * E * F)
    return float(batch_size * (layers + T * 2 * E * V))
  raise TypeError(f"no FLOP count for a {type(config).__name__}.")


def train_flops(config: Any, batch_size: int, feature_lengths: Mapping[str, int]) -> float:
  """Forward + backward (2 x forward) matmul FLOPs of one train step on the global batch."""
  return 3.0 * forward_flops(config, batch_size, feature_lengths)


# Peak dense (not sparse) bfloat16 FLOP/s of one chip from vendor data sheets, by words in jax's
# `device_kind`; the first match wins, so variants come before the name they contain.
PEAK_BF16_FLOPS = (
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v5p", 459e12),
    ("TPU v5", 459e12), ("TPU v6 lite", 918e12), ("TPU v6e", 918e12),
    ("A100", 312e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12),
    ("H200", 989e12), ("B200", 2250e12), ("L40S", 362e12), ("L40", 181e12),
    ("L4", 121e12),
)


def peak_flops(device_kind: str) -> Optional[float]:
  """Peak bfloat16 FLOP/s of one device of this `jax.Device.device_kind`, None if unknown (a
  CPU)."""
  for words, flops in PEAK_BF16_FLOPS:
    if words.lower() in device_kind.lower():
      return flops
  return None
