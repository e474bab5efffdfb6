"""What checkpoints need to know about T5 1.1: its Hugging Face names and config, and how to
recognise (or diagnose) a T5 1.1 parameter tree from its shapes.

The checkpoint readers and writers (`irl_lm.checkpoints`) dispatch to this module through
`irl_lm.checkpoints.families`; it imports nothing from them. Functions raise `ValueError` with
one full sentence for a checkpoint that does not fit; the checkpoint layer re-raises it as its
`CheckpointError`.

Hugging Face's `T5ForConditionalGeneration` stores every dense weight as (out, in), the
transpose of a T5X kernel, keeps one relative-position table per stack in block 0, and names
the pieces of each block by position (`layer.0` self-attention, `layer.1` cross-attention in the
decoder, last `layer` the gated MLP):

  shared.weight                                            (V, E)  token_embedder/embedding
  lm_head.weight                                           (V, E)  decoder/logits_dense/kernel.T
  {encoder,decoder}.block.0.layer.0.SelfAttention.relative_attention_bias.weight
                                                           (32, H) {..}/relpos_bias/rel_embedding.T
  encoder.block.i.layer.0.SelfAttention.{q,k,v}.weight     (J, E)  .../attention/{query,key,value}
  encoder.block.i.layer.0.SelfAttention.o.weight           (E, J)  .../attention/out
  encoder.block.i.layer.0.layer_norm.weight                (E,)    .../pre_attention_layer_norm
  encoder.block.i.layer.1.DenseReluDense.{wi_0,wi_1}.weight (F, E) .../mlp/{wi_0,wi_1}
  encoder.block.i.layer.1.DenseReluDense.wo.weight         (E, F)  .../mlp/wo
  decoder.block.i.layer.1.EncDecAttention.*                        .../encoder_decoder_attention
  {encoder,decoder}.final_layer_norm.weight                (E,)    {encoder,decoder}_norm

Shapes: V vocab, E emb dim, H heads, D head dim, J = H*D, F mlp dim.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Optional

import numpy as np

from irl_lm.models import t5
from irl_lm.models.t5 import T5Config

# The names `irl_lm.checkpoints.families.CheckpointFamily.from_module` reads.
NAME = "t5_1_1"
DESCRIPTION = "T5 1.1 encoder-decoders (and Flan-T5 / mT5)"
CONFIG_TYPE = T5Config
HF_MODEL_TYPES = ("t5", "mt5")
HF_ARCHITECTURES = ("T5ForConditionalGeneration", "MT5ForConditionalGeneration")
SIZE_NAMES = ("tiny", "small", "base", "large", "xl", "xxl")
# The smallest batch `make_model(config).init(rng, INIT_SHAPES)` builds the parameters from.
INIT_SHAPES = {"encoder_input_tokens": (1, 1), "decoder_input_tokens": (1, 1)}

Shapes = Mapping[str, tuple[int, ...]]
LazyArray = tuple[tuple[int, ...], Callable[[], np.ndarray]]  # (shape, read)

_EMBEDDING_KEYS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_SCANNED = re.compile(r"(^|/)(encoder|decoder)/layers/")
_LAYER = re.compile(r"^(encoder|decoder)/layers_(\d+)/")


def make_model(config: T5Config) -> t5.EncoderDecoderModel:
  """The model of `config` (what checkpoints are loaded into)."""
  return t5.EncoderDecoderModel(config)


def preset(size: str, **overrides: Any) -> T5Config:
  """`t5.t5_1_1_config(size, **overrides)`: a size in SIZE_NAMES."""
  return t5.t5_1_1_config(size, **overrides)


# ----------------------------------------------------------------------------- shapes

def infer_config(shapes: Shapes, **overrides: Any) -> Optional[T5Config]:
  """The T5Config whose parameters have these shapes (None if they are not T5 1.1's tree).

  Args:
    shapes: flat T5X shapes, {'token_embedder/embedding': (V, E), ...}.
    overrides: extra T5Config fields (e.g. `activation_dtype`).
  """
  try:
    vocab, emb = shapes["token_embedder/embedding"]
    heads, buckets = shapes["encoder/relpos_bias/rel_embedding"]
    joined = shapes["encoder/layers_0/attention/query/kernel"][1]
    mlp = shapes["encoder/layers_0/mlp/wi_0/kernel"][1]
  except (KeyError, ValueError, IndexError):
    return None
  layers = {"encoder": set(), "decoder": set()}
  for key in shapes:
    match = _LAYER.match(key)
    if match:
      layers[match.group(1)].add(int(match.group(2)))
  fields = dict(vocab_size=vocab, emb_dim=emb, num_heads=heads, head_dim=joined // heads,
                num_encoder_layers=len(layers["encoder"]),
                num_decoder_layers=len(layers["decoder"]), mlp_dim=mlp,
                relative_attention_num_buckets=buckets)
  fields.update(overrides)
  return T5Config(**fields)


def size_name(config: T5Config) -> Optional[str]:
  """The T5 1.1 preset ('small', 'xl', ...) with these dimensions (any vocabulary), or None."""
  fields = ("emb_dim", "num_heads", "head_dim", "num_encoder_layers", "num_decoder_layers",
            "mlp_dim")
  for name in SIZE_NAMES:
    candidate = t5.t5_1_1_config(name)
    if all(getattr(candidate, f) == getattr(config, f) for f in fields):
      return name
  return None


def _describe_dims(config: T5Config) -> str:
  name = size_name(config)
  label = f"T5 1.1 '{name}'" if name else "a T5 1.1 model"
  return (f"{label} (emb_dim {config.emb_dim}, {config.num_heads} heads of {config.head_dim}, "
          f"{config.num_encoder_layers}+{config.num_decoder_layers} layers, mlp_dim "
          f"{config.mlp_dim}, vocab {config.vocab_size})")


def likely_cause(found: Shapes, expected: Shapes) -> str:
  """A sentence naming why checkpoint shapes `found` differ from the model's `expected`
  (scanned layers, another size preset, another vocabulary), or '' when no cause is evident."""
  scanned = next((k for k in found if _SCANNED.search(k)), None)
  if scanned:
    return ("the checkpoint stores scanned layers (one stacked 'layers' entry per stack, e.g. "
            f"{scanned}, as T5X's scalable_t5 / umT5 configs write), which irl_lm does not "
            "load: unscan it with T5X first (one 'layers_<i>' entry per layer)")
  ours, theirs = infer_config(expected), infer_config(found)
  if ours is None or theirs is None:
    return ""
  if dataclasses.replace(theirs, vocab_size=ours.vocab_size) != ours:
    name = size_name(theirs)
    fix = (f"set t5_1_1_config.size = '{name}' (convert: --size={name})" if name else
           "set the T5Config dimensions to match")
    return (f"wrong size preset: the checkpoint is {_describe_dims(theirs)} but the model is "
            f"{_describe_dims(ours)}; {fix}")
  if theirs.vocab_size != ours.vocab_size:
    return (f"the vocabulary size differs (checkpoint {theirs.vocab_size}, model "
            f"{ours.vocab_size}); set t5_1_1_config.vocab_size = {theirs.vocab_size} (32128 for "
            "T5's SentencePiece vocabulary)")
  return ""


# ----------------------------------------------------------------------------- Hugging Face

def _attention_names(hf_prefix: str, t5x_prefix: str) -> dict[str, tuple[str, bool]]:
  return {f"{t5x_prefix}/{ours}/kernel": (f"{hf_prefix}.{theirs}.weight", True)
          for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))}


def _mlp_names(hf_prefix: str, t5x_prefix: str) -> dict[str, tuple[str, bool]]:
  return {f"{t5x_prefix}/mlp/{name}/kernel": (f"{hf_prefix}.DenseReluDense.{name}.weight", True)
          for name in ("wi_0", "wi_1", "wo")}


def t5x_to_hf_names(num_encoder_layers: int, num_decoder_layers: int
                    ) -> dict[str, tuple[str, bool]]:
  """The name map between our (T5X) parameters and Hugging Face's T5 1.1 weights.

  Args:
    num_encoder_layers, num_decoder_layers: layers in each stack.
  Returns:
    {'encoder/layers_0/attention/query/kernel': ('encoder.block.0.layer.0.SelfAttention.q.weight',
    True), ...}: for every T5X parameter path, the Hugging Face key and whether the array is
    transposed between the two. The embedding maps to 'shared.weight' (untransposed).
  """
  names: dict[str, tuple[str, bool]] = {
      "token_embedder/embedding": ("shared.weight", False),
      "decoder/logits_dense/kernel": ("lm_head.weight", True),
      "encoder/encoder_norm/scale": ("encoder.final_layer_norm.weight", False),
      "decoder/decoder_norm/scale": ("decoder.final_layer_norm.weight", False),
  }
  for stack in ("encoder", "decoder"):
    names[f"{stack}/relpos_bias/rel_embedding"] = (
        f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True)
  for i in range(num_encoder_layers):
    ours, theirs = f"encoder/layers_{i}", f"encoder.block.{i}.layer"
    names[f"{ours}/pre_attention_layer_norm/scale"] = (f"{theirs}.0.layer_norm.weight", False)
    names.update(_attention_names(f"{theirs}.0.SelfAttention", f"{ours}/attention"))
    names[f"{ours}/pre_mlp_layer_norm/scale"] = (f"{theirs}.1.layer_norm.weight", False)
    names.update(_mlp_names(f"{theirs}.1", ours))
  for i in range(num_decoder_layers):
    ours, theirs = f"decoder/layers_{i}", f"decoder.block.{i}.layer"
    names[f"{ours}/pre_self_attention_layer_norm/scale"] = (f"{theirs}.0.layer_norm.weight",
                                                            False)
    names.update(_attention_names(f"{theirs}.0.SelfAttention", f"{ours}/self_attention"))
    names[f"{ours}/pre_cross_attention_layer_norm/scale"] = (f"{theirs}.1.layer_norm.weight",
                                                             False)
    names.update(_attention_names(f"{theirs}.1.EncDecAttention",
                                  f"{ours}/encoder_decoder_attention"))
    names[f"{ours}/pre_mlp_layer_norm/scale"] = (f"{theirs}.2.layer_norm.weight", False)
    names.update(_mlp_names(f"{theirs}.2", ours))
  return names


def hf_config_dict(config: T5Config) -> dict[str, Any]:
  """The `config.json` of `T5ForConditionalGeneration` for a T5 1.1 model of `config`.

  Gated-GELU (`gelu_new`), untied `lm_head` (`tie_word_embeddings: false`) applied to the
  unscaled decoder output (`scale_decoder_outputs: false`, transformers 5's name; transformers 4
  derives the same from `tie_word_embeddings`), RMS-norm epsilon 1e-6, pad/start id 0, EOS 1.
  """
  return {
      "architectures": ["T5ForConditionalGeneration"],
      "model_type": "t5",
      "vocab_size": config.vocab_size,
      "d_model": config.emb_dim,
      "d_kv": config.head_dim,
      "d_ff": config.mlp_dim,
      "num_heads": config.num_heads,
      "num_layers": config.num_encoder_layers,
      "num_decoder_layers": config.num_decoder_layers,
      "relative_attention_num_buckets": config.relative_attention_num_buckets,
      "relative_attention_max_distance": config.relative_attention_max_distance,
      "feed_forward_proj": "gated-gelu",
      "dense_act_fn": "gelu_new",
      "is_gated_act": True,
      "layer_norm_epsilon": 1e-6,
      "dropout_rate": config.dropout_rate,
      "initializer_factor": 1.0,
      "tie_word_embeddings": False,
      "scale_decoder_outputs": False,
      "is_encoder_decoder": True,
      "use_cache": True,
      "pad_token_id": 0,
      "eos_token_id": 1,
      "decoder_start_token_id": 0,
      "dtype": "float32",
  }


def config_from_hf(hf_config: Mapping[str, Any], **overrides: Any) -> T5Config:
  """Our T5Config from a Hugging Face T5 `config.json` dict (T5 1.1 only).

  Args:
    hf_config: the parsed `config.json`.
    overrides: extra T5Config fields (e.g. `activation_dtype`).
  Raises:
    ValueError: not a T5 model, or not T5 1.1's gated-GELU feed-forward (T5 1.0 uses
      ReLU and a tied, rescaled output layer that irl_lm's model does not implement).
  """
  if hf_config.get("model_type", "t5") not in HF_MODEL_TYPES:
    raise ValueError(
        f"the Hugging Face checkpoint is a {hf_config.get('model_type')!r} model, not T5: "
        "irl_lm loads T5 1.1 (and Flan-T5 / mT5) encoder-decoders only.")
  proj = hf_config.get("feed_forward_proj", "relu")
  if proj not in ("gated-gelu", "gated-gelu_new"):
    raise ValueError(
        f"the Hugging Face checkpoint uses feed_forward_proj={proj!r}; irl_lm's model is T5 1.1 "
        "(gated-GELU). Original T5 (1.0) checkpoints such as 't5-small' cannot be loaded; use a "
        "T5 1.1 / Flan-T5 checkpoint.")
  num_layers = int(hf_config["num_layers"])
  fields = dict(vocab_size=int(hf_config["vocab_size"]), emb_dim=int(hf_config["d_model"]),
                num_heads=int(hf_config["num_heads"]), head_dim=int(hf_config["d_kv"]),
                num_encoder_layers=num_layers,
                num_decoder_layers=int(hf_config.get("num_decoder_layers") or num_layers),
                mlp_dim=int(hf_config["d_ff"]),
                relative_attention_num_buckets=int(
                    hf_config.get("relative_attention_num_buckets", 32)),
                relative_attention_max_distance=int(
                    hf_config.get("relative_attention_max_distance", 128)))
  fields.update(overrides)
  return T5Config(**fields)


def output_layer_scaled(hf_config: Mapping[str, Any]) -> bool:
  """Whether transformers multiplies the decoder output by `d_model**-0.5` before the output
  layer for this `config.json`: `scale_decoder_outputs` where the config has it (transformers
  5), else `tie_word_embeddings` (True unless set false, as in T5 1.0; transformers 4's rule).
  On import the factor is folded into our `logits_dense` kernel.
  """
  tied = bool(hf_config.get("tie_word_embeddings", True))
  return bool(hf_config.get("scale_decoder_outputs", tied))


def hf_to_params(hf_config: Mapping[str, Any], stored: Shapes,
                 read: Callable[[str], np.ndarray], *, where: str) -> dict[str, LazyArray]:
  """Our parameters as lazy transforms of the tensors of a Hugging Face T5 1.1 checkpoint.

  Args:
    hf_config: its parsed `config.json`.
    stored: {Hugging Face key: shape} of every stored tensor.
    read: `(key) -> np.ndarray` of the stored tensor (stored dtype).
    where: the checkpoint's description ("the Hugging Face checkpoint in DIR"), for errors.
  Returns:
    {T5X path: (shape, read)} for every parameter found, in T5X layout (kernels transposed).
    A tied or rescaled output layer (see `output_layer_scaled`) is folded into `logits_dense`,
    e.g. `shared.T * d_model**-0.5` for T5 1.0's convention: what transformers computes.
  Raises:
    ValueError: a non-T5-1.1 config; (on read) input embeddings stored twice that differ.
  """
  config = config_from_hf(hf_config)

  def lazy(hf_key: str, transpose: bool, scale: Optional[float] = None) -> LazyArray:
    shape = stored[hf_key]
    def read_one() -> np.ndarray:
      array = read(hf_key)
      if scale is not None:
        array = array.astype(np.float32) * np.float32(scale)
      return array.T if transpose else array
    return (tuple(reversed(shape)) if transpose else shape), read_one

  def shared_embedding() -> np.ndarray:
    # Every stored copy (shared, encoder's, decoder's) must agree: T5 1.1 has one embedding.
    present = [k for k in _EMBEDDING_KEYS if k in stored]
    embedding = read(present[0])
    for key in present[1:]:
      other = read(key)
      if other.shape != embedding.shape or not np.array_equal(other, embedding):
        raise ValueError(
            f"{where} has different input embeddings in {present[0]} and {key}; irl_lm's T5 "
            "shares one embedding between encoder and decoder (as T5 1.1 does). A model built "
            "in transformers 5 with tie_word_embeddings=False unties these too: copy "
            "shared.weight into both embed_tokens before saving.")
    return embedding

  params: dict[str, LazyArray] = {}
  embedding_key = next((k for k in _EMBEDDING_KEYS if k in stored), None)
  scaled = output_layer_scaled(hf_config)
  for path, (hf_key, transpose) in t5x_to_hf_names(config.num_encoder_layers,
                                                   config.num_decoder_layers).items():
    if path == "token_embedder/embedding":
      if embedding_key is not None:
        params[path] = (stored[embedding_key], shared_embedding)
      continue
    if path == "decoder/logits_dense/kernel":
      # transformers 5 uses a stored lm_head even when the config says tied; without one, the
      # output layer is the (tied) embedding.
      hf_key = hf_key if hf_key in stored else (embedding_key or hf_key)
      if hf_key in stored:
        params[path] = lazy(hf_key, True,
                            scale=hf_config["d_model"] ** -0.5 if scaled else None)
      continue
    if hf_key in stored:
      params[path] = lazy(hf_key, transpose)
  return params


def params_to_hf(flat_params: Mapping[str, Any], config: T5Config) -> dict[str, np.ndarray]:
  """Our parameters as the tensors of a Hugging Face T5 1.1 checkpoint.

  Args:
    flat_params: {T5X path: host array} (e.g. `traverse_util.flatten_dict(params, sep='/')`).
    config: the model's T5Config.
  Returns:
    {Hugging Face key: contiguous float32 array}, with `shared.weight` and an untied
    `lm_head.weight`.
  Raises:
    ValueError: a parameter of `config`'s model is missing, unexpected or of another shape.
  """
  names = t5x_to_hf_names(config.num_encoder_layers, config.num_decoder_layers)
  missing = [k for k in names if k not in flat_params]
  extra = [k for k in flat_params if k not in names]
  joined = config.num_heads * config.head_dim
  expected = {"token_embedder/embedding": (config.vocab_size, config.emb_dim),
              "encoder/relpos_bias/rel_embedding": (config.num_heads,
                                                    config.relative_attention_num_buckets),
              "encoder/layers_0/attention/query/kernel": (config.emb_dim, joined),
              "encoder/layers_0/mlp/wi_0/kernel": (config.emb_dim, config.mlp_dim)}
  wrong = [f"{k} {tuple(np.shape(flat_params[k]))} vs config {v}" for k, v in expected.items()
           if k in flat_params and tuple(np.shape(flat_params[k])) != v]
  if missing or extra or wrong:
    raise ValueError(
        f"parameters do not match a T5 1.1 model of this config (missing: {missing[:3]}, "
        f"unexpected: {extra[:3]}, shapes: {wrong[:3]}); pass the config the parameters were "
        "trained with.")
  tensors = {}
  for path, (hf_key, transpose) in names.items():
    array = np.asarray(flat_params[path], dtype=np.float32)
    tensors[hf_key] = np.ascontiguousarray(array.T if transpose else array)
  return tensors
