"""Decode a split with the model and score it (the end-of-training evaluation and evaluate mode).

Decoding goes through `irl_lm.decoding` (cached, one jitted loop), with the batch sharded over
the mesh's 'data' axis and the parameters laid out as in training; decoding with the GSM8k
calculator goes through `irl_lm.decoding.calculator` (host loop over a jitted step).
Scores follow the task's metric family (`irl_lm.data.tasks.TASK_METRICS`): 'rouge'
(ROUGE-1/2/Lsum), 'gsm8k' (final-answer accuracy) or 'translation' (BLEU, chrF).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Sequence

import jax
import numpy as np

from irl_lm import decoding
from irl_lm.evaluation import metrics as metrics_lib
from irl_lm.partitioning import Partitioner

EOS_ID = 1


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
    """A short human-readable name, e.g. 'greedy', 'sample_t0.7', 'beam4', 'greedy_calc'."""
    if self.method == "greedy":
      name = "greedy"
    elif self.method == "beam":
      name = f"beam{self.beam_size}"
    elif self.method == "sample":
      extra = (f"_k{self.top_k}" if self.top_k else "") + (
          f"_p{self.top_p:g}" if self.top_p < 1 else "")
      name = f"sample_t{self.temperature:g}{extra}"
    else:
      raise ValueError(f"unknown decoding method '{self.method}': use greedy, sample or beam.")
    if self.calculator:
      if self.method == "beam" or self.top_k or self.top_p < 1:
        raise ValueError(f"the calculator works with greedy decoding and plain temperature "
                         f"sampling, not with {name}.")
      name += "_calc"
    return name

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
      raise ValueError(f"unknown decoding setting {name!r}: use e.g. 'greedy', 'beam4', "
                       "'sample_t0.7', 'sample_t1_k40', 'sample_t1_p0.9', 'greedy_calc'.")
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
                   vocabulary: Any = None) -> Callable[[Any, np.ndarray, jax.Array], jax.Array]:
  """A `(params, encoder_input_tokens [B, L], rng) -> tokens [B, T]` decoder (best beam).

  Jitted as a whole, except with `config.calculator`, which needs the task's `vocabulary` and
  runs `calculator_decode`'s host loop over a jitted step.
  """
  config.describe()  # validates the method name
  if config.calculator:
    if vocabulary is None:
      raise ValueError("decoding with the calculator needs the task's vocabulary.")
    from irl_lm.decoding import calculator as calculator_decode  # pylint: disable=g-import-not-at-top
    return calculator_decode.make_calculator_decode_fn(
        model, vocabulary=vocabulary, max_decode_length=max_decode_length,
        temperature=0.0 if config.method == "greedy" else config.temperature, eos_id=EOS_ID,
        context=partitioner.activate)
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


def make_sampler(model: Any, *, max_decode_length: int, partitioner: Partitioner,
                 param_shardings: Any, top_k: int = 0, top_p: float = 1.0
                 ) -> Callable[[Any, np.ndarray, jax.Array, float], jax.Array]:
  """A jitted `(params, inputs [B, L], rng, temperature) -> tokens [B, T]` sampler.

  The temperature is a traced argument (0 = greedy), so a whole temperature sweep, greedy
  included, compiles once; the outputs equal `make_decode_fn`'s for the same settings.
  """
  def sample(params, inputs, rng, temperature):
    return decoding.temperature_sample(
        model, params, inputs, rng, max_decode_length=max_decode_length,
        temperature=temperature, top_k=top_k, top_p=top_p, eos_id=EOS_ID).tokens

  batch = partitioner.batch_sharding()
  replicated = partitioner.replicated()
  jitted = jax.jit(sample, in_shardings=(param_shardings, batch, replicated, replicated),
                   out_shardings=batch)

  def run(params, inputs, rng, temperature):
    with partitioner.activate():
      return jitted(params, inputs, rng, np.float32(temperature))
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


def score_predictions(metric: str, references: Sequence[str], predictions: Sequence[str], *,
                      tokenize: str = metrics_lib.DEFAULT_TOKENIZE
                      ) -> tuple[dict[str, float], list[dict[str, float]]]:
  """Corpus-level and per-example task scores (all 0-100).

  Args:
    metric: 'rouge' (rouge1, rouge2, rougeLsum), 'gsm8k' (accuracy; per example `correct`
      0/100) or 'translation' (corpus bleu and chrf; per example sentence `bleu`, `chrf`).
    references: N reference texts.
    predictions: N outputs.
    tokenize: sacrebleu tokenizer for BLEU.

  Returns:
    (corpus scores dict, N per-example score dicts).
  """
  if metric == "rouge":
    per_example = metrics_lib.rouge_per_example(references, predictions)
    corpus = {k: float(np.mean([s[k] for s in per_example])) for k in metrics_lib.ROUGE_TYPES}
  elif metric == "gsm8k":
    correct = metrics_lib.gsm8k_correct(references, predictions)
    per_example = [{"correct": 100.0 * c} for c in correct]
    corpus = {"accuracy": 100.0 * float(np.mean(correct))}
  elif metric == "translation":
    per_example = [{"bleu": b, "chrf": c} for b, c in zip(
        metrics_lib.sentence_bleu_scores(references, predictions, tokenize=tokenize),
        metrics_lib.sentence_chrf_scores(references, predictions))]
    corpus = {"bleu": metrics_lib.bleu(references, predictions, tokenize=tokenize),
              "chrf": metrics_lib.chrf(references, predictions)}
  else:
    raise ValueError(f"unknown metric family {metric!r}: use rouge, gsm8k or translation.")
  return corpus, per_example


# The per-example score each metric family correlates with the implicit reward by default
# (the paper: ROUGE-1 on TL;DR, accuracy on GSM8k, BLEU on WMT22).
PRIMARY_SCORE = {"rouge": "rouge1", "gsm8k": "correct", "translation": "bleu"}


def evaluate_summaries(decode_fn: Callable, params: Any, *, task: str, split: str,
                       num_examples: int, feature_lengths: dict[str, int],
                       batch_size: int, seed: int = 0
                       ) -> tuple[dict[str, float], list[dict[str, Any]]]:
  """Decodes `num_examples` of a seqio task's split and scores them with the task's metric.

  `seed` seeds sampling (`DecodingConfig.seed`); greedy and beam search ignore it.

  Returns:
    (metrics, records): metrics are the task's corpus scores (ROUGE-1/2/Lsum for summaries,
    'accuracy' for GSM8k-style tasks, 'bleu'/'chrf' for translation) plus 'num_examples';
    records one dict per example with 'input', 'target', 'prediction'.
  """
  from irl_lm.data import pipeline  # TensorFlow only when data is needed.
  from irl_lm.data import tasks  # pylint: disable=g-import-not-at-top

  examples = pipeline.get_examples(task, split, num_examples=num_examples,
                                   feature_lengths=feature_lengths)
  vocabulary = pipeline.get_vocabulary(task)
  inputs = np.stack([ex["encoder_input_tokens"] for ex in examples]).astype(np.int32)
  tokens = predict_tokens(decode_fn, params, inputs, batch_size=batch_size, seed=seed)
  predictions = [vocabulary.decode(strip_after_eos(row)) for row in tokens]
  references = [ex["targets_text"] for ex in examples]
  scores, _ = score_predictions(tasks.metric_family(task), references, predictions)
  records = [{"input": ex["inputs_text"], "target": ref, "prediction": pred}
             for ex, ref, pred in zip(examples, references, predictions)]
  return dict(scores, num_examples=len(examples)), records
