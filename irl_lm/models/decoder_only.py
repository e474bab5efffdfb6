"""A decoder-only causal transformer (PaLM / Llama / Mistral / Qwen2 style) with T5X's parameter
names and logical axes, prefix-LM features and prompt-prefill decoding.

Parameter tree (no 'params' key in what ``DecoderOnlyModel.init`` returns):
  token_embedder/embedding                                   (V, E)    ('vocab', 'embed')
  decoder/layers_i/pre_self_attention_layer_norm/scale       (E,)      ('embed',)
  decoder/layers_i/self_attention/query/kernel               (E, H*D)  ('embed', 'joined_kv')
  decoder/layers_i/self_attention/{key,value}/kernel         (E, K*D)  ('embed', 'kv_heads')
  decoder/layers_i/self_attention/out/kernel                 (H*D, E)  ('joined_kv', 'embed')
  decoder/layers_i/self_attention/query/bias                 (H*D,)    ('joined_kv',)  qkv_bias
  decoder/layers_i/self_attention/{key,value}/bias           (K*D,)    ('kv_heads',)   qkv_bias
  decoder/layers_i/pre_mlp_layer_norm/scale                  (E,)      absent when parallel_block
  decoder/layers_i/mlp/{wi_0,wi_1}/kernel                    (E, F)    ('embed', 'mlp')  gate, up
  decoder/layers_i/mlp/wo/kernel                             (F, E)    ('mlp', 'embed')
  decoder/decoder_norm/scale                                 (E,)
  decoder/logits_dense/kernel                                (E, V)    ('embed', 'vocab')  untied

Attention logits are scaled by 1/sqrt(D) explicitly (not folded into the query initialiser as in
T5), so Hugging Face weights map one to one. Rotary embeddings use the "rotate half" layout of
Hugging Face's Llama (the first and second halves of each head are the two coordinates).

Shapes: B batch, L prompt length, T continuation length, S = L + T sequence length, V vocab,
E emb dim, H query heads, K key/value heads (H % K == 0), D head dim, F mlp dim.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class DecoderOnlyConfig:
  """Hyper-parameters of a decoder-only transformer (defaults: the CPU-sized 'tiny' preset).

  Attributes:
    vocab_size: V.
    emb_dim: E.
    num_heads: H, query heads.
    num_kv_heads: K, key/value heads (K = H: multi-head; 1 < K < H: grouped-query; K = 1:
      multi-query attention).
    head_dim: D.
    mlp_dim: F.
    num_layers: decoder layers.
    rope_theta: base of the rotary position embedding's frequencies.
    norm_epsilon: RMSNorm epsilon.
    mlp_activation: 'silu' (SwiGLU, Llama) or 'gelu' (gated GELU, tanh approximation).
    qkv_bias: biases on the query/key/value projections (Qwen2).
    tie_embeddings: logits = x @ embedding.T (no logits_dense).
    parallel_block: PaLM-style x + attn(norm(x)) + mlp(norm(x)) with one norm per layer.
    dropout_rate: dropout on residual branches (0 in every preset).
    activation_dtype: dtype of activations (parameters and logits are float32).
    eos_id: end-of-sequence id (seqio's SentencePiece EOS = 1; an imported checkpoint's own).
  """

  vocab_size: int = 4096
  emb_dim: int = 128
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 32
  mlp_dim: int = 256
  num_layers: int = 2
  rope_theta: float = 10000.0
  norm_epsilon: float = 1e-6
  mlp_activation: str = "silu"
  qkv_bias: bool = False
  tie_embeddings: bool = False
  parallel_block: bool = False
  dropout_rate: float = 0.0
  activation_dtype: Any = jnp.bfloat16
  eos_id: int = 1


_PRESETS: dict[str, dict[str, Any]] = {
    # For CPU tests and minutes-long CPU training; set vocab_size to the task's vocabulary.
    "tiny": dict(emb_dim=128, num_heads=4, num_kv_heads=2, head_dim=32, mlp_dim=256,
                 num_layers=2),
    # Llama-3.2-1B's shape (tied embeddings, GQA 32/8).
    "1b": dict(vocab_size=128256, emb_dim=2048, num_heads=32, num_kv_heads=8, head_dim=64,
               mlp_dim=8192, num_layers=16, rope_theta=500000.0, norm_epsilon=1e-5,
               tie_embeddings=True),
    # Llama-3-8B's shape.
    "llama3_8b": dict(vocab_size=128256, emb_dim=4096, num_heads=32, num_kv_heads=8,
                      head_dim=128, mlp_dim=14336, num_layers=32, rope_theta=500000.0,
                      norm_epsilon=1e-5),
}


def decoder_only_config(size: str, **overrides: Any) -> DecoderOnlyConfig:
  """Preset config: size in 'tiny', '1b', 'llama3_8b'; ``overrides`` replace any field."""
  if size not in _PRESETS:
    raise ValueError(f"Unknown decoder-only size {size!r}; choose one of {sorted(_PRESETS)}.")
  return DecoderOnlyConfig(**{**_PRESETS[size], **overrides})
