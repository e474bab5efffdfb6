"""Analytic per-device activation memory of a train step, for `run.mode = 'check'`.

What the backward pass keeps per layer and token depends on the rematerialisation policy
(`layers.REMAT_POLICIES`): 'none' keeps every intermediate, 'dots' the matmul outputs (attention
scores included), 'minimal' the matmul outputs without batch dimensions (the projections, not the
attention scores), 'full' only each layer's input (plus one layer's intermediates while it is
recomputed). Added to that: the float32 logits, their softmax and gradient ([B, T, V] three
times). Heads, MLP and vocabulary dimensions split over the mesh's 'model' axis, the batch over
'data' (T5X's default rules). It is an estimate: `tests/models/test_memory.py`
compares it, for every policy, with XLA's own accounting of compiled steps (0.95-1.36 of it).

Shapes: B batch, L input (prompt) length, T target length, E emb dim, J = H·D, F mlp dim.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from irl_lm.models import decoder_only, t5


def _layer_bytes(*, tokens: float, keys: float, E: int, J: float, J_kv: float, F: float, H: float,
                 act: int, policy: str, cross_keys: float = 0.0, cross_J: float = 0.0) -> float:
  """Bytes one layer keeps for `tokens` query tokens attending over `keys` keys (and, for a
  T5 decoder layer, `cross_keys` encoder tokens with cross-attention width `cross_J`)."""
  # The float32 softmax output (`ops.softmax` keeps nothing else) and, when activations are
  # narrower, its cast that the weights-times-values product keeps.
  scores = H * (keys + cross_keys) * (4 + (act if act != 4 else 0))
  projections = act * (J + 2 * J_kv + E + 2 * F + E + cross_J * 2)
  if policy == "full":
    return tokens * act * E
  if policy == "minimal":
    return tokens * projections
  if policy == "dots":
    return tokens * (projections + H * (keys + cross_keys) * 4 + act * (J + cross_J))
  elementwise = act * (5 * E + J + J_kv + 2 * F + cross_J * 2 + E)
  return tokens * (projections + scores + elementwise)


def activation_bytes(config: Any, batch_size: int, feature_lengths: Mapping[str, int], *,
                     data: int = 1, model: int = 1) -> float:
  """Estimated bytes of activations one device keeps during a train step.

  Args:
    config: a `T5Config` or `DecoderOnlyConfig` (its `remat_policy` and `activation_dtype`).
    batch_size: the global batch B.
    feature_lengths: {'inputs': L, 'targets': T}.
    data, model: the mesh's 'data' and 'model' axis sizes.
  """
  act = np.dtype(config.activation_dtype).itemsize
  policy = getattr(config, "remat_policy", "none")
  rows = math.ceil(batch_size / data)
  L, T = feature_lengths["inputs"], feature_lengths["targets"]
  E, D = config.emb_dim, config.head_dim
  H = config.num_heads / model
  J = H * D
  F = config.mlp_dim / model
  logits = 3 * 4 * rows * T * config.vocab_size / model
  if isinstance(config, t5.T5Config):
    enc = _layer_bytes(tokens=L, keys=L, E=E, J=J, J_kv=J, F=F, H=H, act=act, policy=policy)
    dec = _layer_bytes(tokens=T, keys=T, E=E, J=J, J_kv=J, F=F, H=H, act=act, policy=policy,
                       cross_keys=L, cross_J=J)
    per_row = config.num_encoder_layers * enc + config.num_decoder_layers * dec
  elif isinstance(config, decoder_only.DecoderOnlyConfig):
    # Unpacked split layout: L + T slots through the stack.
    S = L + T
    J_kv = config.num_kv_heads * D / model
    layer = _layer_bytes(tokens=S, keys=S, E=E, J=J, J_kv=J_kv, F=F, H=H, act=act,
                         policy=policy)
    per_row = config.num_layers * layer
  else:
    raise TypeError(f"no activation estimate for a {type(config).__name__}.")
  if policy == "full":  # one layer's intermediates exist again while it is recomputed
    per_row += _full_recompute_bytes(config, L, T, act, model)
  return float(rows * per_row + logits)


def _full_recompute_bytes(config: Any, L: int, T: int, act: int, model: int) -> float:
  """One layer's 'none' activations (what exists while 'full' recomputes a layer)."""
  E, D = config.emb_dim, config.head_dim
  H, F = config.num_heads / model, config.mlp_dim / model
  J = H * D
  if isinstance(config, t5.T5Config):
    return max(_layer_bytes(tokens=L, keys=L, E=E, J=J, J_kv=J, F=F, H=H, act=act, policy="none"),
               _layer_bytes(tokens=T, keys=T, E=E, J=J, J_kv=J, F=F, H=H, act=act,
                            policy="none", cross_keys=L, cross_J=J))
  S = L + T
  return _layer_bytes(tokens=S, keys=S, E=E, J=J, J_kv=config.num_kv_heads * D / model, F=F,
                      H=H, act=act, policy="none")


# Memory of one accelerator chip (GiB), for `check.device_memory_gib` by name.
DEVICE_MEMORY_GIB = {
    "tpu_v4": 32, "tpu_v5e": 16, "tpu_v5p": 95, "tpu_v6e": 32,
    "a100_40gb": 40, "a100_80gb": 80, "h100": 80, "h200": 141, "b200": 180,
}
