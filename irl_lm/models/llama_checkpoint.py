"""What checkpoints need to know about decoder-only models (`decoder_only.DecoderOnlyConfig`):
Hugging Face's Llama / Mistral / Qwen2 names and configs, and how to recognise (or diagnose) a
decoder-only parameter tree from its shapes.

The checkpoint readers and writers (`irl_lm.checkpoints`) dispatch to this module through
`irl_lm.checkpoints.families`; it imports nothing from them. Functions raise `ValueError` with
one full sentence for a checkpoint that does not fit; the checkpoint layer re-raises it as its
`CheckpointError`.

Hugging Face's `LlamaForCausalLM` (and `MistralForCausalLM`, `Qwen2ForCausalLM`) stores every
dense weight as (out, in), the transpose of our kernels:

  Hugging Face (<i> = model.layers.i)   shape        ours (<l> = decoder/layers_i)
  model.embed_tokens.weight             (V, E)       token_embedder/embedding
  <i>.input_layernorm.weight            (E,)         <l>/pre_self_attention_layer_norm/scale
  <i>.self_attn.q_proj.weight           (H*D, E)     <l>/self_attention/query/kernel.T
  <i>.self_attn.{k,v}_proj.weight       (K*D, E)     <l>/self_attention/{key,value}/kernel.T
  <i>.self_attn.o_proj.weight           (E, H*D)     <l>/self_attention/out/kernel.T
  <i>.self_attn.{q,k,v}_proj.bias       (H*D | K*D,) <l>/self_attention/{query,key,value}/bias
                                                     (Qwen2 only; never on o_proj)
  <i>.post_attention_layernorm.weight   (E,)         <l>/pre_mlp_layer_norm/scale
  <i>.mlp.{gate,up}_proj.weight         (F, E)       <l>/mlp/{wi_0,wi_1}/kernel.T
  <i>.mlp.down_proj.weight              (E, F)       <l>/mlp/wo/kernel.T
  model.norm.weight                     (E,)         decoder/decoder_norm/scale
  lm_head.weight                        (V, E)       decoder/logits_dense/kernel.T (untied only)

Both use the "rotate half" rotary layout and HF-style RMSNorm (`weight * x / rms(x)`), so no
tensor is permuted. Exports are `LlamaForCausalLM` (Mistral without a sliding window is the
same network) or, with q/k/v biases, `Qwen2ForCausalLM`.

Shapes: V vocab, E emb dim, H query heads, K key/value heads, D head dim, F mlp dim.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Optional

import numpy as np
from absl import logging

from irl_lm.models import decoder_only
from irl_lm.models.decoder_only import DecoderOnlyConfig

# The names `irl_lm.checkpoints.families.CheckpointFamily.from_module` reads.
NAME = "llama"
DESCRIPTION = "decoder-only Llama / Mistral / Qwen2"
CONFIG_TYPE = DecoderOnlyConfig
HF_MODEL_TYPES = ("llama", "mistral", "qwen2")
HF_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
SIZE_NAMES = ("tiny", "1b", "llama3_8b")
# The smallest batch `make_model(config).init(rng, INIT_SHAPES)` builds the parameters from.
INIT_SHAPES = {"decoder_input_tokens": (1, 1)}
# config.json's max_position_embeddings on export: RoPE has no learned positions, so this only
# bounds what transformers' generate and sliding-window logic assume.
EXPORT_MAX_POSITIONS = 8192

Shapes = Mapping[str, tuple[int, ...]]
LazyArray = tuple[tuple[int, ...], Callable[[], np.ndarray]]  # (shape, read)

_LAYER = re.compile(r"^decoder/layers_(\d+)/")
# Keys only an encoder-decoder (T5, GAIL's discriminator) has.
_NOT_DECODER_ONLY = re.compile(
    r"^encoder/|^decoder/relpos_bias/|/encoder_decoder_attention/|^decoder/score_head/")
_ARCHITECTURE_TYPES = dict(zip(HF_ARCHITECTURES, HF_MODEL_TYPES))
# transformers' tanh-approximated GELUs, which are our 'gelu' (exact `gelu` is not).
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh")
_DIMS = ("emb_dim", "num_heads", "num_kv_heads", "head_dim", "mlp_dim", "num_layers")


def make_model(config: DecoderOnlyConfig) -> Any:
  """The model of `config` (what checkpoints are loaded into)."""
  return decoder_only.DecoderOnlyModel(config)


def preset(size: str, **overrides: Any) -> DecoderOnlyConfig:
  """`decoder_only.decoder_only_config(size, **overrides)`: a size in SIZE_NAMES."""
  return decoder_only.decoder_only_config(size, **overrides)


# ----------------------------------------------------------------------------- shapes

def param_shapes(config: DecoderOnlyConfig) -> dict[str, tuple[int, ...]]:
  """{path: shape} of every parameter of `config`'s model (the tree in `decoder_only`)."""
  e, f, v = config.emb_dim, config.mlp_dim, config.vocab_size
  q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
  shapes = {"token_embedder/embedding": (v, e), "decoder/decoder_norm/scale": (e,)}
  if not config.tie_embeddings:
    shapes["decoder/logits_dense/kernel"] = (e, v)
  for i in range(config.num_layers):
    layer = f"decoder/layers_{i}"
    shapes[f"{layer}/pre_self_attention_layer_norm/scale"] = (e,)
    attention = f"{layer}/self_attention"
    shapes.update({f"{attention}/query/kernel": (e, q), f"{attention}/key/kernel": (e, kv),
                   f"{attention}/value/kernel": (e, kv), f"{attention}/out/kernel": (q, e)})
    if config.qkv_bias:
      shapes.update({f"{attention}/query/bias": (q,), f"{attention}/key/bias": (kv,),
                     f"{attention}/value/bias": (kv,)})
    if not config.parallel_block:
      shapes[f"{layer}/pre_mlp_layer_norm/scale"] = (e,)
    shapes.update({f"{layer}/mlp/wi_0/kernel": (e, f), f"{layer}/mlp/wi_1/kernel": (e, f),
                   f"{layer}/mlp/wo/kernel": (f, e)})
  return shapes


def _head_split(query: int, kv: int, overrides: Mapping[str, Any]) -> int:
  """The head dim D of a query width H*D and key/value width K*D (shapes cannot tell it): the
  overrides' head_dim (or num_heads / num_kv_heads), else 128 or 64 when it divides both, else
  their greatest common divisor."""
  if overrides.get("head_dim"):
    return int(overrides["head_dim"])
  if overrides.get("num_heads"):
    return query // int(overrides["num_heads"])
  if overrides.get("num_kv_heads"):
    return kv // int(overrides["num_kv_heads"])
  return next((d for d in (128, 64) if query % d == 0 and kv % d == 0), math.gcd(query, kv))


def infer_config(shapes: Shapes, **overrides: Any) -> Optional[DecoderOnlyConfig]:
  """The DecoderOnlyConfig whose parameters have these shapes (None if they are not a
  decoder-only tree, e.g. T5's).

  Shapes fix E, F, V, the layer count, H*D, K*D, tied embeddings, q/k/v biases and parallel
  blocks, not how H*D splits into heads: dimensions that match a preset take its split (and its
  rope_theta and norm_epsilon); otherwise D is guessed (see `_head_split`) unless `overrides`
  give head_dim, num_heads or num_kv_heads.

  Args:
    shapes: flat shapes, {'token_embedder/embedding': (V, E), ...}.
    overrides: extra DecoderOnlyConfig fields (e.g. `activation_dtype`, `head_dim`).
  """
  first = "decoder/layers_0"
  try:
    vocab, emb = shapes["token_embedder/embedding"]
    query = shapes[f"{first}/self_attention/query/kernel"][1]
    kv = shapes[f"{first}/self_attention/key/kernel"][1]
    mlp = shapes[f"{first}/mlp/wi_0/kernel"][1]
  except (KeyError, ValueError, IndexError):
    return None
  if any(_NOT_DECODER_ONLY.search(k) for k in shapes):
    return None
  num_layers = len({int(m.group(1)) for k in shapes if (m := _LAYER.match(k))})
  fields: dict[str, Any] = dict(
      vocab_size=vocab, emb_dim=emb, mlp_dim=mlp, num_layers=num_layers,
      tie_embeddings="decoder/logits_dense/kernel" not in shapes,
      qkv_bias=f"{first}/self_attention/query/bias" in shapes,
      parallel_block=f"{first}/pre_mlp_layer_norm/scale" not in shapes)
  matching = [c for c in map(preset, SIZE_NAMES)
              if _widths(c) == (emb, query, kv, mlp, num_layers)]
  if matching and not any(overrides.get(k) for k in ("head_dim", "num_heads", "num_kv_heads")):
    fields.update({k: getattr(matching[0], k) for k in ("num_heads", "num_kv_heads", "head_dim",
                                                        "rope_theta", "norm_epsilon")})
  else:
    head_dim = _head_split(query, kv, overrides)
    fields.update(num_heads=query // head_dim, num_kv_heads=kv // head_dim, head_dim=head_dim)
  fields.update(overrides)
  return DecoderOnlyConfig(**fields)


def size_name(config: DecoderOnlyConfig) -> Optional[str]:
  """The preset ('tiny', '1b', ...) with these dimensions (any vocabulary), or None."""
  for name in SIZE_NAMES:
    candidate = preset(name)
    if all(getattr(candidate, f) == getattr(config, f) for f in _DIMS):
      return name
  return None


def _widths(config: DecoderOnlyConfig) -> tuple[int, ...]:
  """What the shapes fix: E, H*D, K*D, F, layers (not the head split)."""
  return (config.emb_dim, config.num_heads * config.head_dim,
          config.num_kv_heads * config.head_dim, config.mlp_dim, config.num_layers)


def _describe_dims(config: DecoderOnlyConfig) -> str:
  name = size_name(config)
  label = f"the decoder-only '{name}'" if name else "a decoder-only model"
  emb, query, kv, mlp, layers = _widths(config)
  return (f"{label} (emb_dim {emb}, query / key-value widths {query} / {kv}, {layers} layers, "
          f"mlp_dim {mlp}, vocab {config.vocab_size})")


def likely_cause(found: Shapes, expected: Shapes) -> str:
  """A sentence naming why checkpoint shapes `found` differ from the model's `expected`
  (an encoder-decoder checkpoint, tied vs untied output layer, q/k/v biases, parallel blocks,
  another size or vocabulary), or '' when no cause is evident."""
  ours = infer_config(expected)
  if ours is None:
    return ""
  if any(_NOT_DECODER_ONLY.search(k) for k in found):
    return ("the checkpoint is an encoder-decoder (T5-style, it has encoder or cross-attention "
            "parameters) but the model is decoder-only; build a T5 model for it")
  theirs = infer_config(found)
  if theirs is None:
    return ""
  for field, what in (("tie_embeddings", "an output layer tied to the embedding (no "
                       "logits_dense / lm_head)"),
                      ("qkv_bias", "query/key/value biases"),
                      ("parallel_block", "parallel blocks (no pre_mlp_layer_norm)")):
    if getattr(theirs, field) != getattr(ours, field):
      has, lacks = ("checkpoint", "model") if getattr(theirs, field) else ("model", "checkpoint")
      return (f"the {has} has {what} and the {lacks} has not; set DecoderOnlyConfig.{field} = "
              f"{getattr(theirs, field)}")
  if _widths(theirs) != _widths(ours):
    name = size_name(theirs)
    fix = (f"use the '{name}' preset" if name else
           "set the DecoderOnlyConfig dimensions to match")
    return (f"wrong size: the checkpoint is {_describe_dims(theirs)} but the model is "
            f"{_describe_dims(ours)}; {fix}")
  if theirs.vocab_size != ours.vocab_size:
    return (f"the vocabulary size differs (checkpoint {theirs.vocab_size}, model "
            f"{ours.vocab_size}); set DecoderOnlyConfig.vocab_size = {theirs.vocab_size}")
  return ""


# ----------------------------------------------------------------------------- Hugging Face

def params_to_hf_names(config: DecoderOnlyConfig) -> dict[str, tuple[str, bool]]:
  """The name map between our parameters and Hugging Face's Llama / Qwen2 weights.

  Returns:
    {'decoder/layers_0/self_attention/query/kernel': ('model.layers.0.self_attn.q_proj.weight',
    True), ...}: for every parameter of `config`'s model (`param_shapes`), the Hugging Face key
    and whether the array is transposed between the two.
  Raises:
    ValueError: `config.parallel_block` (no Hugging Face Llama-family model has one).
  """
  if config.parallel_block:
    raise ValueError("a parallel-block (PaLM-style) decoder has no Llama / Qwen2 equivalent in "
                     "Hugging Face; export a model with parallel_block=False.")
  names: dict[str, tuple[str, bool]] = {
      "token_embedder/embedding": ("model.embed_tokens.weight", False),
      "decoder/decoder_norm/scale": ("model.norm.weight", False),
  }
  if not config.tie_embeddings:
    names["decoder/logits_dense/kernel"] = ("lm_head.weight", True)
  for i in range(config.num_layers):
    ours, theirs = f"decoder/layers_{i}", f"model.layers.{i}"
    names[f"{ours}/pre_self_attention_layer_norm/scale"] = (f"{theirs}.input_layernorm.weight",
                                                            False)
    names[f"{ours}/pre_mlp_layer_norm/scale"] = (f"{theirs}.post_attention_layernorm.weight",
                                                 False)
    for name, proj in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
      names[f"{ours}/self_attention/{name}/kernel"] = (f"{theirs}.self_attn.{proj}_proj.weight",
                                                       True)
      if config.qkv_bias and name != "out":
        names[f"{ours}/self_attention/{name}/bias"] = (f"{theirs}.self_attn.{proj}_proj.bias",
                                                       False)
    for name, proj in (("wi_0", "gate"), ("wi_1", "up"), ("wo", "down")):
      names[f"{ours}/mlp/{name}/kernel"] = (f"{theirs}.mlp.{proj}_proj.weight", True)
  return names


def _model_type(hf_config: Mapping[str, Any]) -> str:
  model_type = hf_config.get("model_type")
  if model_type in HF_MODEL_TYPES:
    return model_type
  for architecture in hf_config.get("architectures") or []:
    if architecture in _ARCHITECTURE_TYPES:
      return _ARCHITECTURE_TYPES[architecture]
  raise ValueError(
      f"the Hugging Face checkpoint is a {model_type!r} model, not one of "
      f"{', '.join(HF_MODEL_TYPES)}: irl_lm's decoder-only model loads Llama, Mistral and Qwen2.")


def _rope_theta(hf_config: Mapping[str, Any]) -> float:
  """rope_theta as transformers reads it: from `rope_parameters` (transformers 5) or the legacy
  `rope_scaling`, else the top-level `rope_theta` (transformers 4), else 10000; refuses scaling."""
  rope = hf_config.get("rope_scaling") or hf_config.get("rope_parameters") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type not in (None, "default"):
    raise ValueError(
        f"the Hugging Face checkpoint uses {rope_type!r} RoPE scaling, which irl_lm's "
        "decoder-only model does not implement (it has plain RoPE only); use a checkpoint "
        "without rope scaling.")
  return float(rope.get("rope_theta", hf_config.get("rope_theta", 10000.0)))


def _check_sliding_window(hf_config: Mapping[str, Any], model_type: str) -> None:
  """Refuses an enabled sliding window shorter than the model's context (it changes attention
  past the window); a window at least max_position_embeddings long is full causal attention."""
  window = hf_config.get("sliding_window", 4096)  # transformers' default for both
  num_layers = int(hf_config["num_hidden_layers"])
  if model_type == "mistral":
    sliding = window is not None
  elif model_type == "qwen2":
    layer_types = hf_config.get("layer_types")
    if layer_types:
      sliding = "sliding_attention" in layer_types
    else:
      sliding = (bool(hf_config.get("use_sliding_window", False))
                 and int(hf_config.get("max_window_layers", 28)) < num_layers)
  else:
    return
  if not sliding or window is None:
    return
  positions = int(hf_config.get("max_position_embeddings",
                                131072 if model_type == "mistral" else 32768))
  if int(window) < positions:
    raise ValueError(
        f"the Hugging Face {model_type} checkpoint uses sliding-window attention (window "
        f"{window} < max_position_embeddings {positions}), which irl_lm's decoder-only model "
        "does not implement; use a checkpoint without a sliding window (e.g. sliding_window: "
        "null).")
  logging.info("%s checkpoint: sliding window %s covers max_position_embeddings %s; loaded "
               "with full causal attention (identical within that length).", model_type,
               window, positions)


IRL_LM_KEY = "irl_lm_token_ids"


def config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> DecoderOnlyConfig:
  """Our DecoderOnlyConfig from a Hugging Face Llama, Mistral or Qwen2 `config.json` dict, with
  the tokenizer's ids as they are (`pad_is_token`, no start token: `start_id` None).

  Args:
    hf_config: the parsed `config.json`.
    overrides: extra DecoderOnlyConfig fields (e.g. `activation_dtype`).
  Raises:
    ValueError: another model type, or what irl_lm does not implement: RoPE scaling, MLP
      biases, Llama's attention_bias (it biases o_proj too), an enabled sliding window shorter
      than the context, an activation other than SiLU or tanh-approximated GELU.
  """
  model_type = _model_type(hf_config)
  if hf_config.get("mlp_bias"):
    raise ValueError("the Hugging Face checkpoint has MLP biases (mlp_bias=true), which irl_lm's "
                     "decoder-only model does not implement; use a checkpoint without them.")
  if model_type != "qwen2" and hf_config.get("attention_bias"):
    raise ValueError(
        "the Hugging Face checkpoint has attention_bias=true (biases on q/k/v and o_proj), "
        "which irl_lm's decoder-only model does not implement (it has q/k/v biases only, as "
        "Qwen2); use a checkpoint without attention biases.")
  activation = hf_config.get("hidden_act", "silu")
  if activation not in ("silu", "swish") + _TANH_GELUS:
    raise ValueError(
        f"the Hugging Face checkpoint uses hidden_act={activation!r}; irl_lm's decoder-only "
        f"model implements 'silu' and the tanh-approximated GELU ({', '.join(_TANH_GELUS)}).")
  _check_sliding_window(hf_config, model_type)
  heads = int(hf_config["num_attention_heads"])
  emb = int(hf_config["hidden_size"])
  eos = hf_config.get("eos_token_id")
  if isinstance(eos, (list, tuple)):
    eos = eos[0] if eos else None
  fields: dict[str, Any] = dict(
      vocab_size=int(hf_config["vocab_size"]), emb_dim=emb, num_heads=heads,
      num_kv_heads=int(hf_config.get("num_key_value_heads") or heads),
      head_dim=int(hf_config.get("head_dim") or emb // heads),
      mlp_dim=int(hf_config["intermediate_size"]),
      num_layers=int(hf_config["num_hidden_layers"]), rope_theta=_rope_theta(hf_config),
      norm_epsilon=float(hf_config.get("rms_norm_eps", 1e-6)),
      mlp_activation="gelu" if activation in _TANH_GELUS else "silu",
      qkv_bias=model_type == "qwen2",
      tie_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
      # The token ids as the checkpoint's tokenizer gives them: id 0 is a token (Llama 3 and
      # Qwen2: '!'), and a sequence starts with its own first token (any BOS is in the text).
      pad_is_token=True, start_id=None)
  # A model irl_lm exported records its own token-id conventions (e.g. trained on a seqio
  # vocabulary: id 0 is padding and every sequence starts with 0).
  own = hf_config.get(IRL_LM_KEY) or {}
  fields.update({k: own[k] for k in ("pad_is_token", "start_id") if k in own})
  if eos is not None:
    fields["eos_id"] = int(eos)
  fields.update(overrides)
  return DecoderOnlyConfig(**fields)


def hf_config_dict(config: DecoderOnlyConfig) -> dict[str, Any]:
  """The `config.json` of `LlamaForCausalLM` (or `Qwen2ForCausalLM` when `config.qkv_bias`)
  for `config`'s model: plain RoPE (`rope_parameters`, and `rope_theta` for transformers 4),
  no sliding window, pad id 0, EOS `config.eos_id`, `max_position_embeddings`
  EXPORT_MAX_POSITIONS, and under `IRL_LM_KEY` the model's `pad_is_token` and `start_id`
  (transformers ignores the key; `config_from_hf` reads it back, so a model trained with a
  start token keeps it).

  Raises:
    ValueError: `config.parallel_block`.
  """
  params_to_hf_names(config)  # refuses what has no Hugging Face form
  hf: dict[str, Any] = {
      "vocab_size": config.vocab_size,
      "hidden_size": config.emb_dim,
      "intermediate_size": config.mlp_dim,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim,
      "hidden_act": "silu" if config.mlp_activation == "silu" else "gelu_pytorch_tanh",
      "max_position_embeddings": EXPORT_MAX_POSITIONS,
      "rms_norm_eps": config.norm_epsilon,
      "rope_theta": config.rope_theta,
      "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
      "tie_word_embeddings": config.tie_embeddings,
      "attention_dropout": 0.0,
      "initializer_range": 0.02,
      "use_cache": True,
      "pad_token_id": 0,
      "eos_token_id": config.eos_id,
      "dtype": "float32",
      IRL_LM_KEY: {"pad_is_token": config.pad_is_token, "start_id": config.start_id},
  }
  if config.qkv_bias:
    hf.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2", use_sliding_window=False,
              sliding_window=None, max_window_layers=config.num_layers)
  else:
    hf.update(architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=False,
              mlp_bias=False)
  return hf


def hf_to_params(hf_config: Mapping[str, Any], stored: Shapes,
                 read: Callable[[str], np.ndarray], *, where: str) -> dict[str, LazyArray]:
  """Our parameters as lazy transforms of the tensors of a Hugging Face Llama-family checkpoint.

  Args:
    hf_config: its parsed `config.json`.
    stored: {Hugging Face key: shape} of every stored tensor.
    read: `(key) -> np.ndarray` of the stored tensor (stored dtype).
    where: the checkpoint's description ("the Hugging Face checkpoint in DIR"), for errors.
  Returns:
    {our path: (shape, read)} for every parameter found (kernels transposed). A tied config's
    stored `lm_head.weight` is ignored when it equals the embedding.
  Raises:
    ValueError: an unsupported config (see `config_from_hf`); (on reading the embedding) a
      tied config whose stored lm_head differs from the embedding (transformers then unties).
  """
  config = config_from_hf(hf_config)
  embedding_key, head_key = "model.embed_tokens.weight", "lm_head.weight"

  def lazy(hf_key: str, transpose: bool) -> LazyArray:
    shape = stored[hf_key]
    def read_one() -> np.ndarray:
      array = read(hf_key)
      return array.T if transpose else array
    return (tuple(reversed(shape)) if transpose else shape), read_one

  def tied_embedding() -> np.ndarray:
    embedding = read(embedding_key)
    head = read(head_key)
    if head.shape != embedding.shape or not np.array_equal(head, embedding):
      raise ValueError(
          f"{where} says tie_word_embeddings=true but stores an lm_head.weight that differs "
          "from model.embed_tokens.weight (transformers then uses it untied); set "
          "tie_word_embeddings to false in its config.json to load both.")
    return embedding

  params: dict[str, LazyArray] = {}
  for path, (hf_key, transpose) in params_to_hf_names(config).items():
    if hf_key not in stored:
      continue
    if path == "token_embedder/embedding" and config.tie_embeddings and head_key in stored:
      params[path] = (stored[hf_key], tied_embedding)
    else:
      params[path] = lazy(hf_key, transpose)
  return params


def params_to_hf(flat_params: Mapping[str, Any], config: DecoderOnlyConfig
                 ) -> dict[str, np.ndarray]:
  """Our parameters as the tensors of a Hugging Face Llama (or, with q/k/v biases, Qwen2)
  checkpoint.

  Args:
    flat_params: {path: host array} (e.g. `traverse_util.flatten_dict(params, sep='/')`).
    config: the model's DecoderOnlyConfig.
  Returns:
    {Hugging Face key: contiguous float32 array}; no `lm_head.weight` when tied.
  Raises:
    ValueError: a parameter of `config`'s model is missing, unexpected or of another shape,
      or `config.parallel_block`.
  """
  names = params_to_hf_names(config)
  expected = param_shapes(config)
  missing = [k for k in expected if k not in flat_params]
  extra = [k for k in flat_params if k not in expected]
  wrong = [f"{k} {tuple(np.shape(flat_params[k]))} vs config {v}" for k, v in expected.items()
           if k in flat_params and tuple(np.shape(flat_params[k])) != v]
  if missing or extra or wrong:
    raise ValueError(
        f"parameters do not match a decoder-only model of this config (missing: {missing[:3]}, "
        f"unexpected: {extra[:3]}, shapes: {wrong[:3]}); pass the config the parameters were "
        "trained with.")
  tensors = {}
  for path, (hf_key, transpose) in names.items():
    array = np.asarray(flat_params[path], dtype=np.float32)
    tensors[hf_key] = np.ascontiguousarray(array.T if transpose else array)
  return tensors
