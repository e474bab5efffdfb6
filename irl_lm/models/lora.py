"""LoRA: low-rank adapters on a model's attention and MLP kernels, with the base frozen.

`LoraModel(model, rank, alpha, targets)` implements the `base.Model` seam around any model
family. Its parameters are ``{'base': the wrapped model's parameters, 'lora': adapters}``, the
adapters a tree like the base's holding, for every 2-D `kernel` (In, Out) of a sub-layer named
in `targets`, ``{'a': (In, r), 'b': (r, Out)}``. Every forward pass uses
``kernel + (alpha / r) · a @ b`` (`merge`); `b` starts at zero, so a fresh LoRA model computes
exactly the base model. The train job freezes 'base' (`trainable_labels`: no gradient step and
no optimiser state for it), so the optimiser's memory is that of the adapters only; checkpoints
hold both parts, and `merge` gives a plain checkpoint of the wrapped model (what `convert`
exports).

Shapes: In, Out a kernel's dimensions, r the rank.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import PartitionSpec

from irl_lm.models import base

# T5X / decoder-only sub-layer names: attention projections and MLP kernels.
DEFAULT_TARGETS = ("query", "key", "value", "out", "wi_0", "wi_1", "wo")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Where and how big the adapters are.

  Attributes:
    rank: r.
    alpha: the adapters' output is scaled by alpha / r.
    targets: names of the sub-layers whose 2-D `kernel` gets an adapter.
  """
  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = DEFAULT_TARGETS


class LoraModel:
  """A model with LoRA adapters; see the module docstring. Delegates everything but the
  parameters to the wrapped model (`config`, features, token ids, decoding)."""

  def __init__(self, model: Any, rank: int = 8, alpha: float = 16.0,
               targets: Sequence[str] = DEFAULT_TARGETS):
    if rank < 1:
      raise ValueError(f"LoRA rank must be a positive integer, got {rank}.")
    self.model = model
    self.lora = LoraConfig(rank, float(alpha), tuple(targets))
    self.config = model.config

  def __getattr__(self, name: str) -> Any:  # features, token ids: the wrapped model's
    return getattr(self.model, name)

  def _is_target(self, path: tuple[str, ...], shape: Sequence[int]) -> bool:
    return (len(path) >= 2 and path[-1] == "kernel" and path[-2] in self.lora.targets
            and len(shape) == 2)

  def init_adapters(self, rng: jax.Array, base_params: Any) -> Any:
    """Adapters for these base parameters (arrays or ShapeDtypeStructs): `a` ~ N(0, 1/In),
    `b` = 0."""
    flat = traverse_util.flatten_dict(base_params)
    out = {}
    for i, (path, leaf) in enumerate(sorted(flat.items())):
      if self._is_target(path, leaf.shape):
        fan_in, fan_out = leaf.shape
        a = jax.random.normal(jax.random.fold_in(rng, i), (fan_in, self.lora.rank),
                              jnp.float32) / jnp.sqrt(fan_in)
        out[path[:-1] + ("a",)] = a
        out[path[:-1] + ("b",)] = jnp.zeros((self.lora.rank, fan_out), jnp.float32)
    if not out:
      raise ValueError(f"no 2-D kernel of a sub-layer named {', '.join(self.lora.targets)} "
                       "to adapt: check the LoRA targets against the model's parameter names.")
    return traverse_util.unflatten_dict(out)

  def with_base(self, base_params: Any, rng: Optional[jax.Array] = None) -> Any:
    """{'base': base_params, 'lora': fresh adapters} (e.g. around imported weights)."""
    rng = jax.random.key(0) if rng is None else rng
    return {"base": base_params, "lora": self.init_adapters(rng, base_params)}

  def init(self, rng: jax.Array, input_shapes: base.InputShapes) -> Any:
    base_rng, lora_rng = jax.random.split(rng)
    return self.with_base(self.model.init(base_rng, input_shapes), lora_rng)

  def param_logical_axes(self, input_shapes: base.InputShapes) -> Any:
    """The base's axes; an adapter's `a` keeps its kernel's input axis, `b` its output axis."""
    base_axes = self.model.param_logical_axes(input_shapes)
    shapes = jax.eval_shape(lambda r: self.model.init(r, input_shapes), jax.random.key(0))
    flat_axes = traverse_util.flatten_dict(base_axes)  # a PartitionSpec is a leaf
    flat_shapes = traverse_util.flatten_dict(shapes)
    out = {}
    for path, leaf in flat_shapes.items():
      if self._is_target(path, leaf.shape):
        spec = flat_axes[path]
        out[path[:-1] + ("a",)] = PartitionSpec(spec[0], None)
        out[path[:-1] + ("b",)] = PartitionSpec(None, spec[1])
    return {"base": base_axes, "lora": traverse_util.unflatten_dict(out)}

  def merge(self, params: Mapping[str, Any]) -> Any:
    """The wrapped model's parameters with every adapter folded in: kernel + (alpha/r)·a @ b."""
    flat = dict(traverse_util.flatten_dict(params["base"]))
    scale = self.lora.alpha / self.lora.rank
    adapters = traverse_util.flatten_dict(params["lora"])
    for path, a in adapters.items():
      if path[-1] != "a":
        continue
      kernel_path = path[:-1] + ("kernel",)
      b = adapters[path[:-1] + ("b",)]
      kernel = flat[kernel_path]
      flat[kernel_path] = kernel + (scale * (a @ b)).astype(kernel.dtype)
    return traverse_util.unflatten_dict(flat)

  def trainable_labels(self, params: Mapping[str, Any]) -> Any:
    """'frozen' for the base, 'train' for the adapters (for `optax.multi_transform`)."""
    return {"base": jax.tree.map(lambda _: "frozen", params["base"]),
            "lora": jax.tree.map(lambda _: "train", params["lora"])}

  def logits(self, params: Any, batch: base.Batch, *,
             dropout_rng: Optional[jax.Array] = None) -> jax.Array:
    return self.model.logits(self.merge(params), batch, dropout_rng=dropout_rng)

  def decoding_view(self, params: Any) -> tuple[Any, Any]:
    """(the wrapped model, merged parameters): the decoders merge once per call, not per step."""
    return self.model, self.merge(params)

  def init_decode_state(self, params: Any, prompts: jax.Array, max_decode_length: int) -> Any:
    return self.model.init_decode_state(self.merge(params), prompts, max_decode_length)

  def decode_step(self, params: Any, state: Any, tokens: jax.Array,
                  position: Any) -> tuple[jax.Array, Any]:
    return self.model.decode_step(self.merge(params), state, tokens, position)
