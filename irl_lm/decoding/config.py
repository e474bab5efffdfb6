"""Decoding settings (`DecodingConfig`) and the jitted, sharded decode functions built from them.

`DecodingConfig` is the one description of how outputs are generated: the end-of-training and
periodic evaluation, evaluate mode, infer mode and the online objectives' sampling all use it.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import numpy as np

from irl_lm import errors
from irl_lm.decoding import search
from irl_lm.partitioning import Partitioner

DecodeFn = Callable[[Any, np.ndarray, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class DecodingConfig:
  """How outputs are generated.

  Attributes:
    method: 'greedy', 'sample' (temperature / top-k / top-p) or 'beam'.
    temperature, top_k, top_p: sampling settings (top_k=0 and top_p=1 disable filtering).
    beam_size, alpha: beam width and T5X-style length-penalty exponent.
    seed: PRNG seed for sampling.
    calculator: force GSM8k calculator results into the output (greedy or sample without
      top-k/top-p; see `irl_lm.decoding.calculator`).
  """
  method: str = "greedy"
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  beam_size: int = 4
  alpha: float = 0.6
  seed: int = 0
  calculator: bool = False

  def describe(self) -> str:
    """A short human-readable name, e.g. 'greedy', 'sample_t0.7', 'beam4', 'greedy_calc'.

    Raises:
      ValueError: an unknown method, or the calculator with beam search / top-k / top-p.
    """
    if self.method == "greedy":
      name = "greedy"
    elif self.method == "beam":
      name = f"beam{self.beam_size}"
    elif self.method == "sample":
      extra = (f"_k{self.top_k}" if self.top_k else "") + (
          f"_p{self.top_p:g}" if self.top_p < 1 else "")
      name = f"sample_t{self.temperature:g}{extra}"
    else:
      raise errors.SettingError(f"unknown decoding method '{self.method}'"
                                f"{errors.closest(self.method, ('greedy', 'sample', 'beam'))}: "
                                "use greedy, sample or beam.")
    if self.calculator:
      if self.method == "beam" or self.top_k or self.top_p < 1:
        raise errors.SettingError(f"the calculator works with greedy decoding and plain "
                                  f"temperature sampling, not with {name}.")
      name += "_calc"
    return name

  @property
  def sampling_temperature(self) -> float | None:
    """0 for greedy, the temperature for sampling, None for beam search."""
    if self.method == "greedy":
      return 0.0
    return float(self.temperature) if self.method == "sample" else None

  @classmethod
  def from_name(cls, name: str, **overrides: Any) -> "DecodingConfig":
    """Parses a `describe()` name: 'greedy', 'beam4', 'sample_t0.7', 'sample_t1_k40_p0.9',
    with an optional '_calc' suffix; `overrides` set other fields (e.g. seed, alpha).

    Raises:
      ValueError: a name that is not of these forms.
    """
    match = re.fullmatch(r"(greedy|beam(\d+)|sample_t([\d.]+)(?:_k(\d+))?(?:_p([\d.]+))?)"
                         r"(_calc)?", name.strip())
    if not match:
      raise errors.SettingError(f"unknown decoding setting {name!r}: use e.g. 'greedy', "
                                "'beam4', 'sample_t0.7', 'sample_t1_k40', 'sample_t1_p0.9', "
                                "'greedy_calc'.")
    fields: dict[str, Any] = {"calculator": bool(match.group(6))}
    if match.group(1) == "greedy":
      fields["method"] = "greedy"
    elif match.group(2):
      fields.update(method="beam", beam_size=int(match.group(2)))
    else:
      fields.update(method="sample", temperature=float(match.group(3)),
                    top_k=int(match.group(4) or 0), top_p=float(match.group(5) or 1.0))
    config = cls(**{**fields, **overrides})
    config.describe()  # validates
    return config


def make_decode_fn(model: Any, config: DecodingConfig, *, max_decode_length: int,
                   partitioner: Partitioner, param_shardings: Any,
                   vocabulary: Any = None) -> DecodeFn:
  """A `(params, prompts [B, L], rng) -> tokens [B, T]` decoder (the best beam for beam search).

  Jitted as a whole with the batch over the mesh's 'data' axis, except with `config.calculator`,
  which needs the task's `vocabulary` and runs `irl_lm.decoding.calculator`'s host loop over a
  jitted step.
  """
  config.describe()  # validates the method name
  if config.calculator:
    if vocabulary is None:
      raise ValueError("decoding with the calculator needs the task's vocabulary.")
    from irl_lm.decoding import calculator  # pylint: disable=g-import-not-at-top
    return calculator.make_calculator_decode_fn(
        model, vocabulary=vocabulary, max_decode_length=max_decode_length,
        temperature=config.sampling_temperature, context=partitioner.activate)
  if config.method == "beam":
    def decode(params, prompts, rng):
      del rng
      return search.beam_search(model, params, prompts, beam_size=config.beam_size,
                                max_decode_length=max_decode_length,
                                alpha=config.alpha).tokens[:, 0]
  else:
    def decode(params, prompts, rng):  # a static temperature: greedy compiles no sampling
      return search.temperature_sample(
          model, params, prompts, rng, max_decode_length=max_decode_length,
          temperature=config.sampling_temperature, top_k=config.top_k,
          top_p=config.top_p).tokens
  batch = partitioner.batch_sharding()
  return partitioner.jit(decode, in_shardings=(param_shardings, batch, partitioner.replicated()),
                         out_shardings=batch)


def make_sampler(model: Any, *, max_decode_length: int, partitioner: Partitioner,
                 param_shardings: Any, top_k: int = 0, top_p: float = 1.0
                 ) -> Callable[[Any, np.ndarray, jax.Array, float], jax.Array]:
  """A jitted `(params, prompts [B, L], rng, temperature) -> tokens [B, T]` sampler.

  The temperature is a traced argument (0 = greedy), so a whole temperature sweep, greedy
  included, compiles once.
  """
  def sample(params, prompts, rng, temperature):
    return search.temperature_sample(model, params, prompts, rng,
                                     max_decode_length=max_decode_length,
                                     temperature=temperature, top_k=top_k, top_p=top_p).tokens

  batch = partitioner.batch_sharding()
  replicated = partitioner.replicated()
  jitted = partitioner.jit(sample, in_shardings=(param_shardings, batch, replicated, replicated),
                           out_shardings=batch)
  return lambda params, prompts, rng, temperature: jitted(params, prompts, rng,
                                                          np.float32(temperature))
