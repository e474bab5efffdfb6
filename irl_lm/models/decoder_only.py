"""A decoder-only causal transformer (PaLM / Llama / Mistral / Qwen2 style) with T5X's parameter
names and logical axes, split-layout (unpacked) and prefix-LM (packed) features, and
prompt-prefill decoding (see `DecoderOnlyModel`).

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
import functools
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from irl_lm.models import base, features, layers, precision
from irl_lm.models.decoder_only_layout import (batch_prompts, positions_and_bias, prompt_lengths,
                                               shift_right, split_positions_and_bias)

Array = jax.Array
Params = base.Params
DecodeState = dict[str, Any]


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
    activation_dtype: dtype of activations (parameters and logits are float32); by default
      bfloat16 on GPUs and TPUs, float32 on CPUs (`precision.default_activation_dtype`).
    eos_id: end-of-sequence id (seqio's SentencePiece EOS = 1; an imported checkpoint's own).
    pad_is_token: whether id 0 (the pad id of target features) is also a real token of the
      vocabulary (an imported Llama 3 / Qwen2 vocabulary: '!'), sampled like any other; False
      (seqio's SentencePiece vocabularies): id 0 is padding only and is never sampled.
    start_id: the token fed before each sequence's first prompt token (seqio's start token 0);
      None: no start token, the prompt's first token starts the sequence, as a Hugging Face
      model reads its tokenizer's output (a task's template writes any BOS). An empty prompt
      then starts from `eos_id`.
    remat_policy: what each layer keeps for the backward pass ('none', 'minimal', 'dots',
      'full': `layers.REMAT_POLICIES`); the rest is recomputed, saving activation memory.
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
  activation_dtype: Any = dataclasses.field(
      default_factory=precision.default_activation_dtype)
  eos_id: int = 1
  pad_is_token: bool = False
  start_id: Optional[int] = 0
  remat_policy: str = "none"


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


def _first_slot(config: DecoderOnlyConfig) -> int:
  """The first valid prompt slot: 0 (the start token) or 1 (no start token)."""
  return 1 if config.start_id is None else 0


def _lengths(config: DecoderOnlyConfig, prompts_BL: Array) -> Array:
  """int32 [B]: `prompt_lengths` under the config's vocabulary (is id 0 a token?)."""
  return prompt_lengths(prompts_BL, None if config.pad_is_token else base.PAD_ID)


def _kv_heads_major(x: Array) -> Array:
  """[B, S, N, D] -> [B, N, S, D] (the decode cache's layout)."""
  return layers.constrain(jnp.swapaxes(x, 1, 2), layers.KV_HEADS_MAJOR_ACT)


class DecoderLayer(nn.Module):
  """Pre-norm causal self-attention (rotary, grouped-query) and gated MLP, sequential
  (``x + attn(norm(x))``, then ``+ mlp(norm(x))``) or PaLM-parallel (one norm, both branches on
  it); dropout on each residual branch. Teacher-forced (`__call__`) and one-step (`decode`)."""

  config: DecoderOnlyConfig

  def setup(self):
    cfg = self.config
    dtype = cfg.activation_dtype
    self.pre_self_attention_layer_norm = layers.RMSNorm(dtype, cfg.norm_epsilon)
    self.self_attention = layers.GroupedQueryAttention(
        cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.emb_dim, dtype, cfg.qkv_bias)
    if not cfg.parallel_block:
      self.pre_mlp_layer_norm = layers.RMSNorm(dtype, cfg.norm_epsilon)
    self.mlp = layers.MlpBlock(cfg.mlp_dim, dtype, 0.0, cfg.mlp_activation)
    # Shared over positions, as T5X's residual dropout.
    self.dropout = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))

  def _project(self, h: Array, positions: Array) -> tuple[Array, Array, Array]:
    """h [B, S, E], positions [B, S] -> rotated queries [B, S, H, D], rotated keys and values
    [B, S, N, D]."""
    theta = self.config.rope_theta
    query = layers.rotary_embedding(self.self_attention.project_query(h), positions, theta)
    key, value = self.self_attention.project_key_value(h)
    return query, layers.rotary_embedding(key, positions, theta), value

  def _residuals(self, x: Array, h: Array, attended: Array, deterministic: bool) -> Array:
    drop = functools.partial(self.dropout, deterministic=deterministic)
    if self.config.parallel_block:
      x = x + drop(attended) + drop(self.mlp(h))
    else:
      x = x + drop(attended)
      x = x + drop(self.mlp(self.pre_mlp_layer_norm(x)))
    return layers.constrain(x, layers.EMBED_ACT)

  def __call__(self, x: Array, positions: Array, bias: Array, deterministic: bool
               ) -> tuple[Array, Array, Array]:
    """x [B, S, E], positions int [B, S], bias float32 [B, 1, S, S] (causal included)
    -> (x [B, S, E], keys, values [B, S, N, D], rotated: what a decode cache holds)."""
    h = self.pre_self_attention_layer_norm(x)
    query, key, value = self._project(h, positions)
    attended = self.self_attention.attend(query, key, value, bias)
    return self._residuals(x, h, attended, deterministic), key, value

  def decode(self, x: Array, cache: dict[str, Array], positions: Array, bias: Array,
             step: Array) -> tuple[Array, dict[str, Array]]:
    """One step. x [B, 1, E]; cache {'prompt_key', 'prompt_value': [B, N, L, D], 'key',
    'value': [B, N, T, D]}; positions [B, 1]; bias float32 [B, 1, 1, L + T]; step: int32
    scalar t, the decode slot written. Returns (x [B, 1, E], updated cache)."""
    h = self.pre_self_attention_layer_norm(x)
    query, key, value = self._project(h, positions)
    start = (0, 0, step, 0)
    key = lax.dynamic_update_slice(cache["key"], _kv_heads_major(key).astype(
        cache["key"].dtype), start)
    value = lax.dynamic_update_slice(cache["value"], _kv_heads_major(value).astype(
        cache["value"].dtype), start)
    attended = self.self_attention.attend_cached(
        query, [cache["prompt_key"], key], [cache["prompt_value"], value], bias)
    return self._residuals(x, h, attended, True), dict(cache, key=key, value=value)


class Decoder(nn.Module):
  """The layer stack, final norm and (untied) output layer ``logits_dense``."""

  config: DecoderOnlyConfig

  def setup(self):
    cfg = self.config
    layer = layers.remat(DecoderLayer, cfg.remat_policy, 4)
    self.layers = [layer(cfg) for _ in range(cfg.num_layers)]  # layers_i
    self.decoder_norm = layers.RMSNorm(cfg.activation_dtype, cfg.norm_epsilon)
    if not cfg.tie_embeddings:
      self.logits_dense = layers.Dense(cfg.vocab_size, ("embed", "vocab"), jnp.float32)

  def __call__(self, x: Array, positions: Array, bias: Array, deterministic: bool
               ) -> tuple[Array, list[tuple[Array, Array]]]:
    """x [B, S, E] -> (normalised x [B, S, E], per layer (keys, values) [B, S, N, D])."""
    x = layers.constrain(x, layers.EMBED_ACT)
    kv = []
    for layer in self.layers:
      x, key, value = layer(x, positions, bias, deterministic)
      kv.append((key, value))
    return self.decoder_norm(x), kv

  def decode(self, x: Array, state: DecodeState, positions: Array, bias: Array, step: Array
             ) -> tuple[Array, DecodeState]:
    """x [B, 1, E] -> (normalised x [B, 1, E], the updated per-layer caches)."""
    new_state = {}
    for i, layer in enumerate(self.layers):
      x, new_state[f"layers_{i}"] = layer.decode(x, state[f"layers_{i}"], positions, bias, step)
    return self.decoder_norm(x), new_state

  def untied_logits(self, x: Array) -> Array:
    """x [B, S, E] -> float32 [B, S, V] through ``logits_dense``."""
    return self.logits_dense(x)


class DecoderOnlyTransformer(nn.Module):
  """A causal transformer as a flax module; see ``DecoderOnlyModel`` for the pure API."""

  config: DecoderOnlyConfig

  def setup(self):
    cfg = self.config
    # Tied: the embedding is also the output layer, so it starts at the scale of logits_dense's
    # initialiser (logits of std ~1); untied, T5X's N(0, 1).
    init = (nn.initializers.normal(stddev=cfg.emb_dim ** -0.5) if cfg.tie_embeddings
            else layers.EMBEDDING_INIT)
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype, init)
    self.decoder = Decoder(cfg)

  def _logits(self, x: Array) -> Array:
    logits = (self.token_embedder.attend(x) if self.config.tie_embeddings
              else self.decoder.untied_logits(x))
    return layers.constrain(logits, ("batch", "length", "vocab"))

  def __call__(self, decoder_input_tokens: Array, decoder_segment_ids: Array | None = None,
               decoder_positions: Array | None = None, prompt_tokens: Array | None = None,
               deterministic: bool = True) -> Array:
    """Teacher-forced logits -> float32 [B, S, V] (prefix-LM layout: tokens [B, S], segment
    ids and positions alike; fully causal, no attention across packed segments) or [B, T, V]
    (split layout: `prompt_tokens` [B, L] and continuation inputs [B, T]; the stack runs over
    all L + T slots, the output layer over the T continuation slots only)."""
    cfg = self.config
    first = _first_slot(cfg)
    if prompt_tokens is None:
      positions, bias = positions_and_bias(decoder_input_tokens, decoder_segment_ids,
                                           decoder_positions, first_slot=first)
      tokens = decoder_input_tokens
      if cfg.start_id not in (None, base.PAD_ID):  # seqio's converter starts segments with 0
        tokens = jnp.where(positions == 0, cfg.start_id, tokens)
      x, _ = self.decoder(self.token_embedder(tokens), positions, bias, deterministic)
      return self._logits(x)
    length = prompt_tokens.shape[1]
    positions, bias = split_positions_and_bias(_lengths(cfg, prompt_tokens), length,
                                               decoder_input_tokens.shape[1], first_slot=first)
    tokens = jnp.concatenate([shift_right(prompt_tokens, cfg.start_id), decoder_input_tokens], 1)
    x, _ = self.decoder(self.token_embedder(tokens), positions, bias, deterministic)
    return self._logits(x[:, length:])

  def init_decode_state(self, prompts: Array, max_decode_length: int) -> DecodeState:
    """Prefills the caches from prompts [B, L]; see ``DecoderOnlyModel.init_decode_state``."""
    cfg = self.config
    batch, length = prompts.shape
    lengths_B = _lengths(cfg, prompts)
    positions, bias = split_positions_and_bias(lengths_B, length, 0, first_slot=_first_slot(cfg))
    inputs = shift_right(prompts, cfg.start_id)
    _, kv = self.decoder(self.token_embedder(inputs), positions, bias, True)
    empty = layers.constrain(
        jnp.zeros((batch, cfg.num_kv_heads, max_decode_length, cfg.head_dim),
                  cfg.activation_dtype), layers.KV_HEADS_MAJOR_ACT)
    state: DecodeState = {"prompt_lengths": lengths_B}
    for i, (key, value) in enumerate(kv):
      state[f"layers_{i}"] = {"prompt_key": _kv_heads_major(key.astype(cfg.activation_dtype)),
                              "prompt_value": _kv_heads_major(value.astype(cfg.activation_dtype)),
                              "key": empty, "value": empty}
    return state

  def decode_step(self, state: DecodeState, tokens: Array, step: Array
                  ) -> tuple[Array, DecodeState]:
    """tokens [B] at continuation step ``step`` -> (float32 logits [B, V], updated state)."""
    lengths_B = state["prompt_lengths"]
    caches = {k: v for k, v in state.items() if k != "prompt_lengths"}
    prompt_slots = caches["layers_0"]["prompt_key"].shape[2]
    decode_slots = caches["layers_0"]["key"].shape[2]
    first = _first_slot(self.config)
    prompt_slot_L = jnp.arange(prompt_slots)[None, :]
    valid_BK = jnp.concatenate([
        (prompt_slot_L < lengths_B[:, None]) & (prompt_slot_L >= first),
        jnp.broadcast_to(jnp.arange(decode_slots)[None, :] <= step,
                         (lengths_B.shape[0], decode_slots))], axis=1)
    bias = layers.mask_to_bias(valid_BK)[:, None, None, :]
    x = self.token_embedder(tokens[:, None])
    x, caches = self.decoder.decode(x, caches, (lengths_B - first + step)[:, None], bias, step)
    return self._logits(x)[:, 0], {**caches, "prompt_lengths": lengths_B}


class DecoderOnlyModel(base.FlaxModel):
  """A decoder-only transformer as pure functions of (params, inputs): the `base.Model` seam.

  Features, in one of two layouts:
  * split (unpacked batches: training, evaluation, online samples): 'prompt_tokens' [B, L] (the
    prompt right-padded with 0), 'prompt_mask' [B, L] (1 on its real tokens; without it, 0 is
    padding unless `config.pad_is_token`), 'decoder_target_tokens' [B, T] (the continuation),
    'decoder_input_tokens' [B, T] ([last prompt token, y_0, .., y_{T-2}]) and
    'decoder_loss_weights' [B, T]. The stack runs over the L + T slots with per-row positions and
    masks (`split_positions_and_bias`), as if each prompt ran straight into its continuation,
    and the output layer and every loss only over the T continuation slots, like T5's decoder:
    for L >> T most of the vocabulary projection and loss work of a prefix-LM row is skipped,
    and column t is continuation step t in every row.
  * prefix-LM (packed batches): seqio's `PrefixLMFeatureConverter` features of S positions,
    'decoder_input_tokens' (shifted right, 0 first), 'decoder_target_tokens' (prompt, then
    continuation), 'decoder_loss_weights' (1 on continuations), 'decoder_segment_ids',
    'decoder_positions'; seqio's 'decoder_causal_attention' is ignored (fully causal,
    Llama-style), no attention across packed segments.
  Either way a sequence starts with `config.start_id` (seqio's start token 0) before the
  prompt, or, when it is None, with the prompt's first token (the start slot is masked out).

  Decoding: `init_decode_state` runs the prompts once (each row's prompt but its last real
  token, after the start token) into per-layer caches; `decode_step` at continuation step t
  feeds row b's token at position len_b + t and writes decode slot t. The logits of step t equal
  the split layout's teacher-forced logits at column t.

  Attributes:
    config: the DecoderOnlyConfig.
    module: the flax module (``DecoderOnlyTransformer``).
    pad_id: 0, written on padding positions of target features.
    eos_id: ``config.eos_id``.
    pad_is_token: ``config.pad_is_token``.
  """

  def __init__(self, config: DecoderOnlyConfig):
    if config.mlp_activation not in layers.ACTIVATIONS:
      raise ValueError(f"mlp_activation {config.mlp_activation!r} is unknown; choose one of "
                       f"{sorted(layers.ACTIVATIONS)}.")
    if config.num_kv_heads < 1 or config.num_heads % config.num_kv_heads:
      raise ValueError(f"num_heads ({config.num_heads}) must be a multiple of num_kv_heads "
                       f"({config.num_kv_heads}); choose num_kv_heads dividing num_heads.")
    if config.head_dim % 2:
      raise ValueError(f"head_dim must be even for rotary embeddings, got {config.head_dim}.")
    self.config = config
    self.module = DecoderOnlyTransformer(config)
    self.eos_id = config.eos_id
    self.pad_is_token = config.pad_is_token

  def _dummy_inputs(self, input_shapes: base.InputShapes) -> tuple[Array, ...]:
    return (jnp.ones(tuple(input_shapes["decoder_input_tokens"]), jnp.int32),)

  def input_shapes(self, batch_size: int, feature_lengths: Mapping[str, int]
                   ) -> base.InputShapes:
    """{'decoder_input_tokens': (B, L + T)} from {'inputs': L, 'targets': T}."""
    return {"decoder_input_tokens": (batch_size,
                                     feature_lengths["inputs"] + feature_lengths["targets"])}

  def feature_converter(self, pack: bool) -> features.FeatureConverter:
    """Packed: `features.PrefixLMFeatureConverter` (seqio's prefix LM, loss on targets only);
    unpacked: the split layout's `features.SplitFeatureConverter`."""
    if pack:
      return features.PrefixLMFeatureConverter(pack=True)
    return features.SplitFeatureConverter(empty_start_id=self._empty_start_id)

  @property
  def _empty_start_id(self) -> int:
    """The token an empty prompt's continuation starts from."""
    return self.eos_id if self.config.start_id is None else self.config.start_id

  def prompts(self, batch: base.Batch) -> Array:
    """int32 [B, L]: 'prompt_tokens' right-padded with `base.PROMPT_PAD_ID` where 'prompt_mask'
    is 0 (`batch_prompts`; unpacked batches only).

    Raises:
      ValueError: the batch has no 'prompt_tokens' (it is packed).
    """
    if "prompt_tokens" not in batch:
      raise ValueError("This batch has no 'prompt_tokens': packed batches have no per-row "
                       "prompts; set TrainSettings.pack = False.")
    return batch_prompts(batch)

  def continuation_length(self, batch: base.Batch) -> int:
    """T, the continuation columns of an unpacked (split-layout) batch (static)."""
    self.prompts(batch)
    return batch["decoder_target_tokens"].shape[1]

  def teacher_forcing_batch(self, prompts: Array, continuations: Array,
                            lengths: Array | None = None) -> dict[str, Array]:
    """Split-layout features for `continuations` [B, T] of `prompts` [B, L] (right-padded
    with `base.PROMPT_PAD_ID`, see `prompt_lengths`): what the unpacked feature converter makes
    of the same token lists.

    A continuation ends as `base.continuation_mask` says (after `lengths`, at the first EOS
    inclusive); later columns are padding.

    Returns:
      {'prompt_tokens' [B, L] (0-padded), 'prompt_mask' int32 [B, L] (1 on real tokens),
      'decoder_target_tokens' [B, T] (0 after the end), 'decoder_input_tokens' [B, T]
      ([last real prompt token, targets[:-1]]), 'decoder_loss_weights' float32 [B, T]
      (1 on real tokens)}.
    """
    prompts = jnp.asarray(prompts, jnp.int32)
    real_BL = jnp.arange(prompts.shape[1])[None, :] < _lengths(self.config, prompts)[:, None]
    real_BT = base.continuation_mask(continuations, lengths, eos_id=self.eos_id)
    targets = jnp.where(real_BT, continuations, self.pad_id).astype(jnp.int32)
    return {"prompt_tokens": jnp.where(real_BL, prompts, self.pad_id),
            "prompt_mask": real_BL.astype(jnp.int32),
            "decoder_target_tokens": targets,
            "decoder_input_tokens": jnp.concatenate(
                [self.start_tokens(prompts)[:, None], targets[:, :-1]], axis=1),
            "decoder_loss_weights": real_BT.astype(jnp.float32)}

  def logits(self, params: Params, batch: Mapping[str, Array], *,
             dropout_rng: Array | None = None) -> Array:
    """Teacher-forced logits.

    Args:
      params: from ``init``.
      batch: split layout ('prompt_tokens' [B, L], optional 'prompt_mask' [B, L],
        'decoder_input_tokens' [B, T]) or prefix-LM
        layout ('decoder_input_tokens' [B, S] and, packed, 'decoder_segment_ids' and
        'decoder_positions' [B, S]: rotary positions, default 0..S-1).
      dropout_rng: enables dropout when given and config.dropout_rate > 0.
    Returns:
      float32 [B, T, V] or [B, S, V], aligned with 'decoder_target_tokens'.
    """
    deterministic = dropout_rng is None or self.config.dropout_rate == 0.0
    rngs = {} if deterministic else {"dropout": dropout_rng}
    return self.module.apply(
        {"params": params}, batch["decoder_input_tokens"], batch.get("decoder_segment_ids"),
        batch.get("decoder_positions"),
        batch_prompts(batch) if "prompt_tokens" in batch else None,
        deterministic=deterministic, rngs=rngs)

  def init_decode_state(self, params: Params, prompts: Array,
                        max_decode_length: int) -> DecodeState:
    """Runs the prompts once and prepares incremental decoding.

    Args:
      params: from ``init``.
      prompts: int32 [B, L], right-padded with `base.PROMPT_PAD_ID` (see `prompt_lengths`);
        rows may differ in length.
      max_decode_length: T, the decode cache's length (static).
    Returns:
      DecodeState, a dict whose every leaf has batch as its leading axis:
        'prompt_lengths': int32 [B] (`prompt_lengths`);
        'layers_i': {'prompt_key', 'prompt_value': [B, N, L, D] (the rotated keys / values of
                     inputs [start, p_0, .., p_{L-2}]; slots >= the row's length, and the start
                     slot when there is no start token, are never read),
                     'key', 'value': [B, N, T, D] (decode slots, zeros until written)}
      heads-major, in config.activation_dtype.
    """
    return self.module.apply({"params": params}, jnp.asarray(prompts, jnp.int32),
                             max_decode_length, method=DecoderOnlyTransformer.init_decode_state)

  def start_tokens(self, prompts: Array) -> Array:
    """int32 [B]: each row's last real prompt token (for an empty prompt the start token, or
    EOS when the model has none)."""
    prompts = jnp.asarray(prompts, jnp.int32)
    len_B = _lengths(self.config, prompts)
    last_B = jnp.take_along_axis(prompts, jnp.maximum(len_B - 1, 0)[:, None], axis=1)[:, 0]
    return jnp.where(len_B > 0, last_B, self._empty_start_id).astype(jnp.int32)

  def decode_step(self, params: Params, state: DecodeState, tokens: Array,
                  position: Array | int) -> tuple[Array, DecodeState]:
    """One step with the caches.

    Args:
      params: from ``init``.
      state: from ``init_decode_state`` or a previous step.
      tokens: int32 [B], the input at continuation step ``position`` (``start_tokens`` at 0).
      position: int32 scalar t, may be traced; row b's token sits at position len_b + t.
    Returns:
      (float32 logits [B, V] for the next token, updated DecodeState of unchanged shapes);
      equals the split layout's teacher-forced logits at column t.
    """
    return self.module.apply({"params": params}, state, jnp.asarray(tokens, jnp.int32),
                             jnp.asarray(position, jnp.int32),
                             method=DecoderOnlyTransformer.decode_step)
