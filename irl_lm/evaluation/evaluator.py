"""Decode a split with the model and score it (the end-of-training evaluation).

Decoding goes through `irl_lm.decoding` (cached, one jitted loop), with the batch sharded over
the mesh's 'data' axis and the parameters laid out as in training.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from irl_lm import decoding
from irl_lm.evaluation import metrics as metrics_lib
from irl_lm.training.partitioning import Partitioner

EOS_ID = 1


@dataclasses.dataclass(frozen=True)
class DecodingConfig:
  """How outputs are generated.

  Attributes:
    method: 'greedy', 'sample' (temperature / top-k / top-p) or 'beam'.
    temperature, top_k, top_p: sampling settings (top_k=0 and top_p=1 disable filtering).
    beam_size, alpha: beam width and T5X-style length-penalty exponent.
    seed: PRNG seed for sampling.
  """
  method: str = "greedy"
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  beam_size: int = 4
  alpha: float = 0.6
  seed: int = 0

  def describe(self) -> str:
    """A short human-readable name, e.g. 'greedy', 'sample_t0.7', 'beam4'."""
    if self.method == "greedy":
      return "greedy"
    if self.method == "beam":
      return f"beam{self.beam_size}"
    if self.method == "sample":
      extra = (f"_k{self.top_k}" if self.top_k else "") + (
          f"_p{self.top_p:g}" if self.top_p < 1 else "")
      return f"sample_t{self.temperature:g}{extra}"
    raise ValueError(f"unknown decoding method '{self.method}': use greedy, sample or beam.")


def make_decode_fn(model: Any, config: DecodingConfig, *, max_decode_length: int,
                   partitioner: Partitioner, param_shardings: Any
                   ) -> Callable[[Any, np.ndarray, jax.Array], jax.Array]:
  """A jitted `(params, encoder_input_tokens [B, L], rng) -> tokens [B, T]` (best beam)."""
  config.describe()  # validates the method name
  if config.method == "beam":
    def decode(params, inputs, rng):
      del rng
      out = decoding.beam_search(model, params, inputs, beam_size=config.beam_size,
                                 max_decode_length=max_decode_length, alpha=config.alpha,
                                 eos_id=EOS_ID)
      return out.tokens[:, 0]
  else:
    temperature = 0.0 if config.method == "greedy" else config.temperature

    def decode(params, inputs, rng):
      return decoding.temperature_sample(
          model, params, inputs, rng, max_decode_length=max_decode_length,
          temperature=temperature, top_k=config.top_k, top_p=config.top_p,
          eos_id=EOS_ID).tokens

  batch = partitioner.batch_sharding()
  jitted = jax.jit(decode, in_shardings=(param_shardings, batch, partitioner.replicated()),
                   out_shardings=batch)

  def run(params, inputs, rng):
    with partitioner.activate():
      return jitted(params, inputs, rng)
  return run


def predict_tokens(decode_fn: Callable, params: Any, encoder_inputs: np.ndarray, *,
                   batch_size: int, seed: int = 0) -> np.ndarray:
  """Decodes every row of `encoder_inputs` [N, L] in batches of `batch_size`.

  The last batch is padded with all-PAD rows (their outputs are dropped). Returns int32
  [N, T] output tokens (PAD after EOS).
  """
  rng = jax.random.PRNGKey(seed)
  outputs = []
  for start in range(0, len(encoder_inputs), batch_size):
    chunk = encoder_inputs[start:start + batch_size]
    padded = np.zeros((batch_size,) + chunk.shape[1:], np.int32)
    padded[:len(chunk)] = chunk
    rng, step_rng = jax.random.split(rng)
    tokens = np.asarray(jax.device_get(decode_fn(params, padded, step_rng)))
    outputs.append(tokens[:len(chunk)])
  return np.concatenate(outputs, axis=0)


def strip_after_eos(tokens: Sequence[int]) -> list[int]:
  """Token ids before the first EOS, without PAD."""
  out = []
  for t in tokens:
    if t == EOS_ID:
      break
    if t != 0:
      out.append(int(t))
  return out


def evaluate_summaries(decode_fn: Callable, params: Any, *, task: str, split: str,
                       num_examples: int, feature_lengths: dict[str, int],
                       batch_size: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
  """Decodes `num_examples` of a seqio task's split and scores them with ROUGE.

  Returns:
    (metrics, records): metrics {'rouge1','rouge2','rougeLsum','num_examples'}; records one
    dict per example with 'input', 'target', 'prediction'.
  """
  from irl_lm.data import pipeline  # TensorFlow only when data is needed.

  examples = pipeline.get_examples(task, split, num_examples=num_examples,
                                   feature_lengths=feature_lengths)
  vocabulary = pipeline.get_vocabulary(task)
  inputs = np.stack([ex["encoder_input_tokens"] for ex in examples]).astype(np.int32)
  tokens = predict_tokens(decode_fn, params, inputs, batch_size=batch_size)
  predictions = [vocabulary.decode(strip_after_eos(row)) for row in tokens]
  references = [ex["targets_text"] for ex in examples]
  scores = metrics_lib.rouge(references, predictions)
  records = [{"input": ex["inputs_text"], "target": ref, "prediction": pred}
             for ex, ref, pred in zip(examples, references, predictions)]
  return dict(scores, num_examples=len(examples)), records
