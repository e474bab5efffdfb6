"""Hugging Face T5 1.1 checkpoints (`config.json` + `model.safetensors`), read and written
without torch, mapped to and from T5X parameter names.

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

import json
import os
from typing import Any, Callable, Mapping, Optional

import numpy as np

from irl_lm.models.t5 import T5Config
from irl_lm.checkpoints.manager import CheckpointError

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
_EMBEDDING_KEYS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _attention_names(hf_prefix: str, t5x_prefix: str) -> dict[str, tuple[str, bool]]:
  names = {f"{t5x_prefix}/{ours}/kernel": (f"{hf_prefix}.{theirs}.weight", True)
           for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))}
  return names


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
    CheckpointError: not a T5 model, or not T5 1.1's gated-GELU feed-forward (T5 1.0 uses
      ReLU and a tied, rescaled output layer that irl_lm's model does not implement).
  """
  if hf_config.get("model_type", "t5") not in ("t5", "mt5"):
    raise CheckpointError(
        f"the Hugging Face checkpoint is a {hf_config.get('model_type')!r} model, not T5: "
        "irl_lm loads T5 1.1 (and Flan-T5 / mT5) encoder-decoders only.")
  proj = hf_config.get("feed_forward_proj", "relu")
  if proj not in ("gated-gelu", "gated-gelu_new"):
    raise CheckpointError(
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


def read_hf_config(directory: str) -> dict[str, Any]:
  """Parsed `<directory>/config.json`; CheckpointError when missing or not JSON."""
  path = os.path.join(directory, CONFIG_FILE)
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"cannot read the Hugging Face config {path} ({type(e).__name__}: "
                          f"{str(e)[:200]}).") from e


class _SafetensorsReader:
  """Reads named tensors from one or several (indexed) safetensors files as numpy arrays.

  Uses `safetensors.safe_open(..., framework='np')`; bfloat16 tensors, which safetensors' numpy
  API cannot return, are read from the file's byte offsets and viewed as `ml_dtypes.bfloat16`.
  """

  def __init__(self, directory: str):
    from safetensors import safe_open
    self._safe_open = safe_open
    index_path = os.path.join(directory, SAFETENSORS_INDEX)
    try:
      if os.path.exists(index_path):
        with open(index_path) as f:
          weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
      else:
        files = [SAFETENSORS_FILE]
      self._file_of: dict[str, str] = {}
      self.shapes: dict[str, tuple[int, ...]] = {}
      self.dtypes: dict[str, str] = {}
      for name in files:
        path = os.path.join(directory, name)
        with safe_open(path, framework="np") as f:
          for key in f.keys():
            view = f.get_slice(key)
            self._file_of[key] = path
            self.shapes[key] = tuple(int(d) for d in view.get_shape())
            self.dtypes[key] = view.get_dtype()
    except Exception as e:  # safetensors raises its own error types; all mean "unreadable".
      raise CheckpointError(
          f"the Hugging Face checkpoint in {directory} is unreadable or corrupt "
          f"({type(e).__name__}: {str(e)[:200]}); re-save it with "
          "`model.save_pretrained(dir, safe_serialization=True)`.") from e

  def __contains__(self, key: str) -> bool:
    return key in self._file_of

  def read(self, key: str) -> np.ndarray:
    """The tensor `key` as a numpy array of its stored dtype (bfloat16 via ml_dtypes)."""
    path = self._file_of[key]
    try:
      if self.dtypes[key] == "BF16":
        return self._read_raw(path, key)
      with self._safe_open(path, framework="np") as f:
        return f.get_tensor(key)
    except Exception as e:
      raise CheckpointError(f"cannot read {key} from {path} ({type(e).__name__}: "
                            f"{str(e)[:200]}); the file is truncated or corrupt.") from e

  @staticmethod
  def _read_raw(path: str, key: str) -> np.ndarray:
    import ml_dtypes
    with open(path, "rb") as f:
      header_size = int.from_bytes(f.read(8), "little")
      entry = json.loads(f.read(header_size))[key]
      begin, end = entry["data_offsets"]
      f.seek(8 + header_size + begin)
      data = f.read(end - begin)
    if len(data) != end - begin:
      raise ValueError(f"expected {end - begin} bytes, found {len(data)}")
    return np.frombuffer(data, dtype=ml_dtypes.bfloat16).reshape(entry["shape"])


class HFLeaf:
  """One of our parameters as stored in a Hugging Face checkpoint (read lazily).

  Attributes:
    shape: the shape in T5X layout (after transposing).
    read: `() -> np.ndarray` in T5X layout, of the stored dtype.
  """

  def __init__(self, shape: tuple[int, ...], read: Callable[[], np.ndarray]):
    self.shape = shape
    self.read = read


def open_hf(directory: str) -> tuple[dict[str, Any], dict[str, HFLeaf]]:
  """Opens a Hugging Face T5 1.1 directory without reading any weights.

  Args:
    directory: holds `config.json` and `model.safetensors` (or a `model.safetensors.index.json`
      with its shards).
  Returns:
    (config.json dict, {T5X parameter path: HFLeaf}) for every parameter found. A tied or
    rescaled output layer (see `output_layer_scaled`) is folded into `logits_dense`, e.g.
    `shared.T * d_model**-0.5` for T5 1.0's convention: what transformers computes with it.
  Raises:
    CheckpointError: unreadable files, a non-T5-1.1 config.
  """
  hf_config = read_hf_config(directory)
  t5_config = config_from_hf(hf_config)
  reader = _SafetensorsReader(directory)
  leaves: dict[str, HFLeaf] = {}

  def leaf(hf_key: str, transpose: bool, scale: Optional[float] = None) -> HFLeaf:
    shape = reader.shapes[hf_key]
    def read() -> np.ndarray:
      array = reader.read(hf_key)
      if scale is not None:
        array = array.astype(np.float32) * np.float32(scale)
      return array.T if transpose else array
    return HFLeaf(tuple(reversed(shape)) if transpose else shape, read)

  names = t5x_to_hf_names(t5_config.num_encoder_layers, t5_config.num_decoder_layers)
  embedding_key = next((k for k in _EMBEDDING_KEYS if k in reader), None)
  scale = output_layer_scaled(hf_config)
  for path, (hf_key, transpose) in names.items():
    if path == "token_embedder/embedding":
      if embedding_key is not None:
        leaves[path] = HFLeaf(reader.shapes[embedding_key],
                              lambda: _shared_embedding(reader, directory))
      continue
    elif path == "decoder/logits_dense/kernel":
      # transformers 5 uses a stored lm_head even when the config says tied; without one, the
      # output layer is the (tied) embedding.
      hf_key = hf_key if hf_key in reader else (embedding_key or hf_key)
      if hf_key in reader:
        leaves[path] = leaf(hf_key, True, scale=hf_config["d_model"] ** -0.5 if scale else None)
      continue
    if hf_key in reader:
      leaves[path] = leaf(hf_key, transpose)
  return hf_config, leaves


def _shared_embedding(reader: _SafetensorsReader, directory: str) -> np.ndarray:
  """The one input embedding; every stored copy (shared, encoder's, decoder's) must agree."""
  present = [k for k in _EMBEDDING_KEYS if k in reader]
  embedding = reader.read(present[0])
  for key in present[1:]:
    other = reader.read(key)
    if other.shape != embedding.shape or not np.array_equal(other, embedding):
      raise CheckpointError(
          f"the Hugging Face checkpoint in {directory} has different input embeddings in "
          f"{present[0]} and {key}; irl_lm's T5 shares one embedding between encoder and decoder "
          "(as T5 1.1 does). A model built in transformers 5 with tie_word_embeddings=False "
          "unties these too: copy shared.weight into both embed_tokens before saving.")
  return embedding


def output_layer_scaled(hf_config: Mapping[str, Any]) -> bool:
  """Whether transformers multiplies the decoder output by `d_model**-0.5` before the output
  layer for this `config.json`: `scale_decoder_outputs` where the config has it (transformers
  5), else `tie_word_embeddings` (True unless set false, as in T5 1.0; transformers 4's rule).
  On import the factor is folded into our `logits_dense` kernel.
  """
  tied = bool(hf_config.get("tie_word_embeddings", True))
  return bool(hf_config.get("scale_decoder_outputs", tied))


def export_hf(params: Any, config: T5Config, out_dir: str) -> None:
  """Writes our parameters as a Hugging Face T5 1.1 directory that transformers loads.

  Args:
    params: nested dict of arrays with T5X names (what `EncoderDecoderModel.init` returns),
      host or device arrays; written as float32.
    config: the model's T5Config (gives `config.json`).
    out_dir: created if missing; receives `config.json` and `model.safetensors` (metadata
      `{'format': 'pt'}`), with `shared.weight` and an untied `lm_head.weight`.
  Raises:
    CheckpointError: `params` lacks a parameter of `config`'s model or has another shape.
  """
  from flax import traverse_util
  from safetensors.numpy import save_file
  import jax

  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  names = t5x_to_hf_names(config.num_encoder_layers, config.num_decoder_layers)
  missing = [k for k in names if k not in flat]
  extra = [k for k in flat if k not in names]
  joined = config.num_heads * config.head_dim
  expected = {"token_embedder/embedding": (config.vocab_size, config.emb_dim),
              "encoder/relpos_bias/rel_embedding": (config.num_heads,
                                                    config.relative_attention_num_buckets),
              "encoder/layers_0/attention/query/kernel": (config.emb_dim, joined),
              "encoder/layers_0/mlp/wi_0/kernel": (config.emb_dim, config.mlp_dim)}
  wrong = [f"{k} {tuple(np.shape(flat[k]))} vs config {v}" for k, v in expected.items()
           if k in flat and tuple(np.shape(flat[k])) != v]
  if missing or extra or wrong:
    raise CheckpointError(
        f"parameters do not match a T5 1.1 model of this config (missing: {missing[:3]}, "
        f"unexpected: {extra[:3]}, shapes: {wrong[:3]}); pass the config the parameters were "
        "trained with.")
  tensors = {}
  for path, (hf_key, transpose) in names.items():
    array = np.asarray(flat[path], dtype=np.float32)
    tensors[hf_key] = np.ascontiguousarray(array.T if transpose else array)
  os.makedirs(out_dir, exist_ok=True)
  save_file(tensors, os.path.join(out_dir, SAFETENSORS_FILE), metadata={"format": "pt"})
  with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
    json.dump(hf_config_dict(config), f, indent=2, sort_keys=True)
