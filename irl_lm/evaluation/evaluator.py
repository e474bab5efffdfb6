"""`Evaluator`: decode a task's split under decoding settings and score the outputs.

One object serves the end-of-training evaluation, the evaluation during training and evaluate
mode. It reads the split once, decodes through `irl_lm.decoding` (cached, jitted, the batch over
the mesh's 'data' axis, the parameters laid out as in training) in the batched loop of
`irl_lm.evaluation.predict`, and scores with the task's metric family ('rouge': ROUGE-1/2/Lsum,
'gsm8k': final-answer accuracy, 'translation': BLEU and chrF).

With `statistics=True` every output is also teacher-forced once more for its summed implicit
reward (docs/design.md#rewards), log-probability and policy entropy, and the summary gets the
mean summed reward and its Spearman correlation with the per-example score.

Every summary also shows the task's trivial baselines (`irl_lm.evaluation.baselines`, chosen
on the train split once per process and task, scored on the same examples) and the model's
margin over the best of them, and the share of outputs that loop (`repeated_3gram_rate`).

On the known-distribution task the summary also gets the exact metrics of
`irl_lm.evaluation.known_distribution` (forward / reverse KL, coverage, reward-teacher Spearman).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from absl import logging

from irl_lm.decoding.config import DecodingConfig, make_decode_fn, make_sampler
from irl_lm.evaluation import arithmetic as arithmetic_lib
from irl_lm.evaluation import baselines as baselines_lib
from irl_lm.evaluation import known_distribution
from irl_lm.evaluation import metrics as metrics_lib
from irl_lm.evaluation import predict
from irl_lm.evaluation import rewards as rewards_lib
from irl_lm.partitioning import Partitioner

DISTINCT_ORDERS = (1, 2)
# Train examples the baselines are chosen on (a seeded sample), and the fitted baselines per
# (task, metric, tokenize) in this process: evaluations during training do not refit them.
BASELINE_TRAIN_EXAMPLES = 500
_FITTED_BASELINES: dict[tuple[str, str, str], list[baselines_lib.Baseline]] = {}


def fitted_baselines(task: str, metric: str, tokenize: str = metrics_lib.DEFAULT_TOKENIZE
                     ) -> list[baselines_lib.Baseline]:
  """The task's baselines chosen on its train split (cached per process); [] when the task
  has no readable train split."""
  key = (task, metric, tokenize)
  if key not in _FITTED_BASELINES:
    from irl_lm.data import pipeline  # pylint: disable=g-import-not-at-top (TF)
    try:
      train = pipeline.get_texts(task, "train", num_examples=BASELINE_TRAIN_EXAMPLES, seed=0)
    except (ValueError, OSError) as e:  # no train split / data (MissingDatasetError)
      logging.warning("no baselines for task %s: %s", task, e)
      train = {"inputs": []}
    _FITTED_BASELINES[key] = (baselines_lib.fit(metric, train["inputs"], train["targets"],
                                                tokenize=tokenize)
                              if train["inputs"] else [])
  return _FITTED_BASELINES[key]


def decoding_dict(config: DecodingConfig) -> dict[str, Any]:
  """The settings as a dict; greedy shows temperature 0 (its temperature field is unused)."""
  fields = dataclasses.asdict(config)
  if config.method == "greedy":
    fields["temperature"] = 0.0
  return fields


def diversity_entry(value: float, *, samples_per_input: int, temperature: Optional[float],
                    tokenize: str) -> dict[str, Any]:
  """A diversity number with the K, temperature and tokenisation it was measured with."""
  return {"value": value, "samples_per_input": samples_per_input, "temperature": temperature,
          "tokenize": tokenize}


def _mean_entropy(stats: Mapping[str, np.ndarray]) -> float:
  tokens = float(np.sum(stats["num_tokens"]))
  return float(np.sum(stats["entropy"]) / tokens) if tokens else 0.0


@dataclasses.dataclass(frozen=True)
class Scoring:
  """How an `Evaluator` scores its outputs.

  Attributes:
    metric: 'rouge', 'gsm8k' or 'translation' (None: the task's).
    statistics: also compute implicit rewards, log-probs and entropies of the outputs.
    gamma: discount of the implicit reward.
    reward_score: per-example score correlated with the reward (None: by metric).
    tokenize: sacrebleu tokenizer for BLEU, Self-BLEU and distinct-n.
    baselines: show the task's trivial baselines and the margin over the best in summaries.
  """
  metric: Optional[str] = None
  statistics: bool = True
  gamma: float = 1.0
  reward_score: Optional[str] = None
  tokenize: str = metrics_lib.DEFAULT_TOKENIZE
  baselines: bool = True


class Evaluator:
  """Decodes and scores one split of a task; see the module docstring.

  Args:
    model: a `base.Model`.
    task: seqio task name; split: its split; num_examples: a seeded random subset of N
      (`pipeline.get_examples` with `pipeline.EVAL_SUBSET_SEED`; None: all).
    feature_lengths: {'inputs': L, 'targets': T}; T is the most output tokens.
    batch_size: rows decoded at once (a multiple of the mesh's 'data' axis).
    partitioner: the mesh; param_shardings: the parameters' NamedShardings (as in training).
    examples: the split's examples (`pipeline.get_examples` records) instead of reading them.
    scoring: metric, implicit-reward statistics, tokenisation and baselines (`Scoring`).

  Raises:
    ValueError: an empty split or a reward score that the metric does not produce.
  """

  def __init__(self, model: Any, *, task: str, split: str, feature_lengths: Mapping[str, int],
               batch_size: int, partitioner: Partitioner, param_shardings: Any,
               num_examples: Optional[int] = None,
               examples: Optional[Sequence[Mapping[str, Any]]] = None,
               scoring: Scoring = Scoring()):
    metric, gamma, tokenize = scoring.metric, scoring.gamma, scoring.tokenize
    from irl_lm.data import pipeline, registry  # pylint: disable=g-import-not-at-top (TF)
    partitioner.check_batch_size(batch_size)
    if examples is None:
      examples = pipeline.get_examples(task, split, num_examples=num_examples,
                                       feature_lengths=dict(feature_lengths),
                                       seed=pipeline.EVAL_SUBSET_SEED)
    if not examples:
      raise ValueError(f"split {split!r} of task {task!r} has no examples.")
    self.model, self.task, self.split = model, task, split
    self.examples = list(examples)
    self.vocabulary = pipeline.get_vocabulary(task)
    self.metric = metric or registry.metric_family(task)
    self.reward_score = scoring.reward_score or metrics_lib.PRIMARY_SCORE.get(self.metric)
    self.prompts = np.stack([ex["input_tokens"] for ex in self.examples]).astype(np.int32)
    self.references = [ex["targets_text"] for ex in self.examples]
    self.max_decode_length = int(feature_lengths["targets"])
    self.batch_size, self.partitioner = batch_size, partitioner
    self.param_shardings = param_shardings
    self.gamma, self.tokenize = gamma, tokenize
    self._stats_fn = (rewards_lib.make_statistics_fn(
        model, gamma=gamma, partitioner=partitioner, param_shardings=param_shardings)
                      if scoring.statistics else None)
    self._decoders: dict[Any, Any] = {}
    self._baselines = scoring.baselines
    self._baseline_scores: Optional[dict[str, Any]] = None
    self._known = known_distribution.KnownDistributionAnalysis.for_task(task, self, gamma=gamma)
    self.arithmetic = (arithmetic_lib.reference_for(task, split) if self.metric == "gsm8k"
                       else None)

  @property
  def num_examples(self) -> int:
    return len(self.examples)

  def _decoder(self, config: DecodingConfig) -> Any:
    """`(params, prompts, rng) -> tokens`, compiled once per setting (one sampler compile for
    every temperature of the same top-k / top-p)."""
    if config.method == "beam" or config.calculator or config.method == "greedy":
      key: Any = config.describe()
      if key not in self._decoders:
        self._decoders[key] = make_decode_fn(
            self.model, config, max_decode_length=self.max_decode_length,
            partitioner=self.partitioner, param_shardings=self.param_shardings,
            vocabulary=self.vocabulary)
      return self._decoders[key]
    key = ("sample", config.top_k, config.top_p)
    if key not in self._decoders:
      self._decoders[key] = make_sampler(
          self.model, max_decode_length=self.max_decode_length, partitioner=self.partitioner,
          param_shardings=self.param_shardings, top_k=config.top_k, top_p=config.top_p)
    sampler, temperature = self._decoders[key], config.sampling_temperature
    return lambda params, prompts, rng: sampler(params, prompts, rng, temperature)

  def decode(self, params: Any, config: DecodingConfig, prompts: Optional[np.ndarray] = None
             ) -> tuple[np.ndarray, list[str]]:
    """Decodes `prompts` [N, L] (default the split's) with `config`.

    Returns:
      (tokens int32 [N, T], the N output texts).
    """
    prompts = self.prompts if prompts is None else prompts
    decode_fn = self._decoder(config)
    tokens = predict.map_batches(lambda p, key: decode_fn(params, p, key), [prompts],
                                 batch_size=self.batch_size, seed=config.seed)
    texts = [self.vocabulary.decode(predict.output_ids(row, self.model.eos_id))
             for row in tokens]
    return tokens, texts

  def statistics(self, params: Any, prompts: np.ndarray, tokens: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """Summed implicit reward, log-prob, entropy and length of each output: float32 [N]."""
    if self._stats_fn is None:
      raise ValueError("this Evaluator was built with statistics=False.")
    return predict.map_batches(lambda p, t: self._stats_fn(params, p, t), [prompts, tokens],
                               batch_size=self.batch_size)

  def baseline_scores(self) -> dict[str, Any]:
    """`baselines.score` of the task's fitted baselines on this split's examples (cached)."""
    if self._baseline_scores is None:
      fitted = fitted_baselines(self.task, self.metric, self.tokenize) if self._baselines else []
      self._baseline_scores = baselines_lib.score(
          fitted, self.metric, [ex["inputs_text"] for ex in self.examples], self.references,
          tokenize=self.tokenize)
    return self._baseline_scores

  def _reward_summary(self, stats: Mapping[str, np.ndarray],
                      scores: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    if self.reward_score not in scores[0]:
      raise ValueError(f"evaluate.reward_score {self.reward_score!r} is not a per-example score "
                       f"of this task's metric: use one of {sorted(scores[0])}.")
    values = [s[self.reward_score] for s in scores]
    return {"gamma": self.gamma, "mean_summed_reward": float(np.mean(stats["reward"])),
            "score": self.reward_score,
            "spearman": rewards_lib.spearman(stats["reward"], values)}

  def evaluate(self, params: Any, config: DecodingConfig
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Decodes the split with `config` and scores it.

    Returns:
      (summary, records). summary: 'setting', 'decoding', 'num_examples', 'scores' (corpus
      task scores), 'diversity' (distinct-1/2 of the outputs), 'repeated_3gram_rate' (and
      'reference_repeated_3gram_rate', the same share among the references),
      'mean_output_tokens', 'seconds', with statistics 'entropy' and 'reward', and (when the
      task has baselines) 'baselines' ({name: {'output' or 'rule', 'scores'}}),
      'best_baseline' ({'name', 'score', 'metric'}) and 'margin' (model − best baseline on
      that score); on the known-distribution task also 'forward_kl',
      'reverse_kl', 'coverage', 'reward_teacher_spearman', 'known_distribution'. records, one
      per example: 'index' (in the split), 'input', 'reference',
      'output', 'scores', 'num_tokens' and, with statistics, 'implicit_reward', 'log_prob',
      'mean_entropy'; for GSM8k also the compared 'answer' and 'reference_answer'.
    """
    start = time.time()
    name = config.describe()
    tokens, outputs = self.decode(params, config)
    corpus, per_example = metrics_lib.score_predictions(self.metric, self.references, outputs,
                                                        tokenize=self.tokenize)
    temperature = config.sampling_temperature
    summary: dict[str, Any] = {
        "setting": name, "decoding": decoding_dict(config), "num_examples": self.num_examples,
        "scores": corpus,
        "diversity": {f"distinct_{n}": diversity_entry(
            metrics_lib.distinct_n(outputs, n, tokenize=self.tokenize), samples_per_input=1,
            temperature=temperature, tokenize=self.tokenize) for n in DISTINCT_ORDERS},
        "repeated_3gram_rate": metrics_lib.repeated_3gram_rate(outputs),
        "reference_repeated_3gram_rate": metrics_lib.repeated_3gram_rate(self.references)}
    scored = self.baseline_scores()
    if scored:
      summary["baselines"] = scored
      summary["best_baseline"], summary["margin"] = baselines_lib.compare(corpus, scored,
                                                                          self.metric)
    lengths = [predict.emitted_length(row, self.model.eos_id) for row in tokens]
    records = [{"index": ex.get("index", i), "input": ex["inputs_text"],
                "reference": self.references[i], "output": outputs[i],
                "scores": per_example[i], "num_tokens": int(lengths[i])}
               for i, ex in enumerate(self.examples)]
    if self._stats_fn is not None:
      stats = self.statistics(params, self.prompts, tokens)
      summary["entropy"] = {"mean_token_entropy": _mean_entropy(stats), "unit": "nats",
                            "policy": "softmax(logits), temperature 1, over the output tokens"}
      summary["reward"] = self._reward_summary(stats, per_example)
      lengths = stats["num_tokens"]
      for i, record in enumerate(records):
        record.update(implicit_reward=float(stats["reward"][i]),
                      log_prob=float(stats["log_prob"][i]),
                      num_tokens=int(stats["num_tokens"][i]),
                      mean_entropy=float(stats["entropy"][i] / max(stats["num_tokens"][i], 1.0)))
    if self.metric == "gsm8k":  # the final numbers that were compared
      for record in records:
        record["answer"] = metrics_lib.gsm8k_final_number(record["output"])
        record["reference_answer"] = metrics_lib.gsm8k_final_number(record["reference"])
    if self.arithmetic is not None:
      summary["arithmetic"] = self.arithmetic.outputs_summary(records)
    summary["mean_output_tokens"] = float(np.mean(lengths))
    if self._known is not None:  # exact metrics against the task's known teacher
      sampling = DecodingConfig("sample", temperature=1.0, seed=config.seed)
      summary.update(self._known(params, lambda p: self.decode(params, sampling, p)[0]))
    summary["seconds"] = time.time() - start
    return summary, records

  def diversity(self, params: Any, *, samples_per_input: int = 4, temperature: float = 1.0,
                seed: int = 0, num_inputs: Optional[int] = None, calculator: bool = False
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """K samples per input: Self-BLEU, distinct-1/2 over all samples, task scores and, with
    statistics, the entropy and the reward correlation over all K*N samples.

    Args:
      samples_per_input: K >= 2.
      temperature: the sampling temperature.
      seed: sampling seed.
      num_inputs: use only the first N inputs of the split (default all).
      calculator: sample with GSM8k calculator forcing (`irl_lm.decoding.calculator`); the
        setting's name ends in ``_calc``.

    Returns:
      (summary, records): each diversity number with its K, temperature and tokenisation;
      one record per input with its K samples.
    """
    if samples_per_input < 2:
      raise ValueError(f"diversity needs at least 2 samples per input, got {samples_per_input}.")
    start, k = time.time(), samples_per_input
    n = self.num_examples if num_inputs is None else min(num_inputs, self.num_examples)
    config = DecodingConfig("sample", temperature=temperature, seed=seed, calculator=calculator)
    prompts = np.repeat(self.prompts[:n], k, axis=0)
    tokens, outputs = self.decode(params, config, prompts)
    sample_refs = [ref for ref in self.references[:n] for _ in range(k)]
    corpus, per_example = metrics_lib.score_predictions(self.metric, sample_refs, outputs,
                                                        tokenize=self.tokenize)
    groups = [outputs[i * k:(i + 1) * k] for i in range(n)]
    entry = lambda value: diversity_entry(value, samples_per_input=k, temperature=temperature,
                                          tokenize=self.tokenize)
    summary: dict[str, Any] = {
        "setting": f"diversity_K{k}_t{temperature:g}{'_calc' if calculator else ''}",
        "decoding": decoding_dict(config),
        "num_inputs": n,
        "self_bleu": {**entry(metrics_lib.self_bleu(groups, tokenize=self.tokenize)),
                      "smoothing": "exp", "effective_order": True},
        **{f"distinct_{order}": entry(metrics_lib.distinct_n(outputs, order,
                                                             tokenize=self.tokenize))
           for order in DISTINCT_ORDERS},
        "scores": corpus}
    samples = [{"output": outputs[j], "scores": per_example[j]} for j in range(n * k)]
    if self._stats_fn is not None:
      stats = self.statistics(params, prompts, tokens)
      summary["entropy"] = {"mean_token_entropy": _mean_entropy(stats), "unit": "nats",
                            "samples_per_input": k, "temperature": temperature}
      summary["reward"] = self._reward_summary(stats, per_example)
      for j, sample in enumerate(samples):
        sample.update(implicit_reward=float(stats["reward"][j]),
                      log_prob=float(stats["log_prob"][j]), num_tokens=int(stats["num_tokens"][j]))
    summary["seconds"] = time.time() - start
    records = [{"index": self.examples[i].get("index", i),
                "input": self.examples[i]["inputs_text"],
                "reference": self.references[i], "samples": samples[i * k:(i + 1) * k]}
               for i in range(n)]
    if self.arithmetic is not None and self._stats_fn is not None:
      summary["arithmetic"] = self.arithmetic.samples_summary(records)
    return summary, records


def log_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
  """The scalars of an `evaluate` or `diversity` summary for metrics.jsonl / TensorBoard:
  task scores, 'num_examples', 'repeated_3gram_rate', the best baseline's scores as
  'baseline_<score>' and 'margin', and 'self_bleu' when present."""
  out = {k: float(v) for k, v in summary["scores"].items()}
  if "num_examples" in summary:
    out["num_examples"] = float(summary["num_examples"])
  if "repeated_3gram_rate" in summary:
    out["repeated_3gram_rate"] = float(summary["repeated_3gram_rate"])
  if "best_baseline" in summary:
    best = summary["baselines"][summary["best_baseline"]["name"]]
    out.update({f"baseline_{k}": float(v) for k, v in best["scores"].items()})
    out["margin"] = float(summary["margin"])
  if "self_bleu" in summary:
    out["self_bleu"] = float(summary["self_bleu"]["value"])
  out.update({k: float(summary[k]) for k in known_distribution.TOP_LEVEL_KEYS
              if summary.get(k) is not None})
  return out


def describe(summary: Mapping[str, Any]) -> str:
  """One line: the task scores, the best baseline and the margin, the looping rate; e.g.
  ``rouge1 34.20, rouge2 9.10 | best baseline (name_template) 27.30 | margin +6.90 |
  repeated 3-grams 0.05``."""
  line = ", ".join(f"{k} {v:.2f}" for k, v in summary["scores"].items())
  if "best_baseline" in summary:
    line += (f" | best baseline ({summary['best_baseline']['name']}) "
             f"{summary['best_baseline']['score']:.2f} | margin {summary['margin']:+.2f}")
  if "repeated_3gram_rate" in summary:
    line += f" | repeated 3-grams {summary['repeated_3gram_rate']:.2f}"
    if "reference_repeated_3gram_rate" in summary:
      line += f" (references {summary['reference_repeated_3gram_rate']:.2f})"
  return line
