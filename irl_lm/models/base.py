"""The model seam: what losses, decoding, training, evaluation and jobs may ask of a model.

Everything outside ``irl_lm/models`` goes through this interface; only a model family knows its
own feature names (e.g. T5's ``encoder_input_tokens``) and token ids. Features shared by every
family are those the losses read, in seqio's naming: ``decoder_target_tokens`` [B, T],
``decoder_loss_weights`` [B, T] (0 on padding and, for decoder-only models, on the prompt) and,
when packed, ``decoder_segment_ids`` [B, T]. For a decoder-only model their length is that of the
whole sequence, S = L + T (prompt then continuation); `continuation_length` gives T.

Prompts passed between layers (`prompts(batch)`, decoding, `teacher_forcing_batch`) are int32
[B, L], right-padded with `PROMPT_PAD_ID` (-1, outside every vocabulary), so that no token id
marks padding: in Llama 3 and Qwen2 vocabularies id 0 (`PAD_ID`) is the ordinary token '!'.
Continuations end by lengths and EOS, never at a token id; `pad_is_token` says whether the
model's `pad_id` is also a real token (sampled like any other) or never sampled.

Shapes: B batch, L prompt (input) length, T continuation (target) length, V vocabulary.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Params = Any  # nested dict of float32 arrays, T5X names, no 'params' key
DecodeState = Any  # a pytree whose every leaf has the batch on axis 0
Batch = Mapping[str, Array]
InputShapes = Mapping[str, Sequence[int]]

# seqio's SentencePiece conventions, shared by T5 and the shipped vocabularies.
PAD_ID = 0
EOS_ID = 1
# Right-pads prompts [B, L] between layers: an id outside every vocabulary.
PROMPT_PAD_ID = -1


class Model(Protocol):
  """The interface every model family implements (T5 1.1 encoder-decoder, decoder-only)."""

  config: Any
  pad_id: int  # written on padding positions of target features
  eos_id: int
  pad_is_token: bool  # True: pad_id is also a real token (sampled); False: never sampled

  def input_shapes(self, batch_size: int, feature_lengths: Mapping[str, int]) -> InputShapes:
    """The shapes `init` traces with, from {'inputs': L, 'targets': T}."""
    ...

  def init(self, rng: Array, input_shapes: InputShapes) -> Params:
    """Random parameters (traceable; close over `input_shapes` to jit it)."""
    ...

  def param_logical_axes(self, input_shapes: InputShapes) -> Any:
    """Pytree like `init`'s result of logical `PartitionSpec`s, computed abstractly."""
    ...

  def logits(self, params: Params, batch: Batch, *, dropout_rng: Optional[Array] = None) -> Array:
    """Teacher-forced float32 logits [B, T, V], aligned with `decoder_target_tokens`."""
    ...

  def feature_converter(self, pack: bool) -> Any:
    """The `irl_lm.models.features.FeatureConverter` that turns a task's 'inputs'/'targets'
    into this model's features (its `seqio_converter()` for seqio tasks)."""
    ...

  def prompts(self, batch: Batch) -> Array:
    """The (unpacked) batch's prompts, int32 [B, L] right-padded with `PROMPT_PAD_ID`, as
    decoding and `teacher_forcing_batch` take them."""
    ...

  def continuation_length(self, batch: Batch) -> int:
    """T, the (static) number of continuation positions of an unpacked batch: what to pass as
    `max_decode_length` to sample continuations of its prompts (T5: the decoder length;
    decoder-only: S - L)."""
    ...

  def teacher_forcing_batch(self, prompts: Array, continuations: Array,
                            lengths: Optional[Array] = None) -> dict[str, Array]:
    """Features that teacher-force `continuations` [B, T] after `prompts` [B, L].

    `prompts` are right-padded with `PROMPT_PAD_ID`. A continuation ends after `lengths` [B]
    tokens (default: all T) or at its first EOS (included), whichever comes first; later
    positions are padding (`continuation_mask`). The pad id is an ordinary token inside a
    continuation. The result has the shared loss features (`decoder_target_tokens`, float32
    `decoder_loss_weights`).
    """
    ...

  def init_decode_state(self, params: Params, prompts: Array,
                        max_decode_length: int) -> DecodeState:
    """Reads the prompts [B, L] once and allocates a cache for `max_decode_length` steps."""
    ...

  def start_tokens(self, prompts: Array) -> Array:
    """int32 [B]: the tokens fed to the first `decode_step` (at position 0)."""
    ...

  def decode_step(self, params: Params, state: DecodeState, tokens: Array,
                  position: Array) -> tuple[Array, DecodeState]:
    """Feeds tokens [B] at continuation step `position` (scalar int32, may be traced) and
    returns float32 next-token logits [B, V] and the updated state; equals the teacher-forced
    logits at each row's `position`-th continuation position (T5: `logits(...)[:, position]`;
    decoder-only: `logits(...)[b, len_b + position]`, len_b row b's prompt length)."""
    ...


def continuation_mask(tokens_BT: Array, lengths_B: Optional[Array] = None, *,
                      eos_id: int = EOS_ID) -> Array:
  """bool [B, T]: the real tokens of continuations (the rule of `teacher_forcing_batch`).

  Real tokens come before `lengths` [B] (default T) and up to and including the first EOS;
  no other id ends a continuation (a sampler's lengths and this mask always agree).
  """
  positions_T = jnp.arange(tokens_BT.shape[1], dtype=jnp.int32)
  real_BT = jnp.ones(tokens_BT.shape, bool)
  if lengths_B is not None:
    real_BT &= positions_T[None, :] < lengths_B[:, None]
  is_eos = tokens_BT == eos_id
  return real_BT & ((jnp.cumsum(is_eos, axis=1) - is_eos) == 0)


class FlaxModel:
  """Shared code of models that wrap a flax module: init and logical axes from dummy inputs.

  Subclasses set `config` and `module` and implement `_dummy_inputs(input_shapes)`, the
  positional arguments of `module.__call__` used to trace it.
  """

  config: Any
  module: nn.Module
  pad_id: int = PAD_ID
  eos_id: int = EOS_ID
  pad_is_token: bool = False

  def _dummy_inputs(self, input_shapes: InputShapes) -> tuple[Array, ...]:
    raise NotImplementedError

  def _init_variables(self, rng: Array, input_shapes: InputShapes) -> Any:
    return self.module.init({"params": rng}, *self._dummy_inputs(input_shapes))

  def init(self, rng: Array, input_shapes: InputShapes) -> Params:
    """Random parameters (the module's initialisers). Traceable: to jit or eval_shape it,
    close over `input_shapes` (e.g. `jax.jit(lambda r: model.init(r, shapes))`).

    Args:
      rng: a PRNG key.
      input_shapes: from `input_shapes(...)`; only used to trace the module, the parameters do
        not depend on them.

    Returns:
      Nested dict of float32 arrays, no 'params' key and no partitioning boxes.
    """
    return nn.meta.unbox(self._init_variables(rng, input_shapes)["params"])

  def param_logical_axes(self, input_shapes: InputShapes) -> Any:
    """Pytree like `init`'s result of `PartitionSpec`s of logical axis names (e.g.
    `PartitionSpec('vocab', 'embed')`), computed abstractly."""
    abstract = jax.eval_shape(lambda rng: self._init_variables(rng, input_shapes),
                              jax.random.key(0))
    return nn.get_partition_spec(abstract)["params"]
