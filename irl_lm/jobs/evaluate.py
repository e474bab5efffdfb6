r"""Evaluate mode: score a training run's newest checkpoint under several decoding settings.

  python -m irl_lm.main --gin_file=gin/iqlearn_arithmetic_tiny.gin \
      --gin_bindings="run.mode = 'evaluate'" \
      --gin_bindings="evaluate.settings = ['greedy', 'greedy_calc', 'beam4']" \
      --gin_bindings="evaluate.temperatures = [0.25, 0.5, 0.75, 1.0]"

The run directory, model, task, feature lengths, optimiser and mesh are the training run's (the
same gin files; ``run.*`` and ``evaluate.*`` bindings do not change the run directory), and the
checkpoint is restored with :func:`irl_lm.jobs.infer.restore_params`.

For every decoding setting (names as :meth:`DecodingConfig.describe` writes them: ``greedy``,
``sample_t0.7``, ``sample_t1_k40_p0.9``, ``beam4``, ``greedy_calc`` / ``sample_t0.5_calc`` for
GSM8k's calculator), the split is decoded and written to
``<run_dir>/eval/<task>_<split>_step<step>/``:

* ``<setting>.jsonl`` - one line per example: ``index``, ``input``, ``reference``, ``output``,
  ``scores`` (the task's per-example scores), ``implicit_reward`` (summed over the output's
  tokens, DESIGN.md section 1.2), ``log_prob``, ``num_tokens``, ``mean_entropy``.
* ``<setting>_summary.json`` - the task scores (ROUGE-1/2/Lsum, GSM8k accuracy, or BLEU/chrF),
  distinct-1/2 of the outputs, the mean per-token policy entropy, the mean summed implicit reward
  and its Spearman correlation with the per-example task score.

Diversity (DESIGN.md section 3): K samples per input at one temperature (default K = 4,
temperature 1.0) give Self-BLEU, distinct-1/2 over all samples, the mean entropy and the
reward-score correlation over all K*N samples, in ``diversity_K<K>_t<temp>.jsonl`` and
``..._summary.json``. Each diversity number is written with the K, temperature and tokenisation
it was measured with. ``summary.json`` collects every summary.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Mapping, Optional, Sequence, Union

import jax
import numpy as np
from absl import logging

from irl_lm.jobs import infer as inference
from irl_lm.evaluation import evaluator
from irl_lm.evaluation import metrics as metrics_lib
from irl_lm.evaluation import rewards as rewards_lib
from irl_lm.partitioning import Partitioner

DecodingSetting = Union[str, evaluator.DecodingConfig]
DISTINCT_ORDERS = (1, 2)


def resolve_settings(settings: Sequence[DecodingSetting] = ("greedy",),
                     temperatures: Sequence[float] = (), beam_sizes: Sequence[int] = (),
                     seed: int = 0) -> list[evaluator.DecodingConfig]:
  """The decoding settings to evaluate, in order, without duplicates.

  Args:
    settings: names (``'greedy'``, ``'sample_t0.7'``, ``'beam4'``, ``'greedy_calc'``, ...) or
      ``DecodingConfig`` objects.
    temperatures: adds ``sample_t<temperature>`` for each (a temperature sweep; 0 is greedy).
    beam_sizes: adds ``beam<width>`` for each.
    seed: sampling seed of the settings given by name.

  Returns:
    A list of ``DecodingConfig`` with distinct ``describe()`` names.
  """
  configs = []
  for setting in settings:
    configs.append(setting if isinstance(setting, evaluator.DecodingConfig)
                   else evaluator.DecodingConfig.from_name(setting, seed=seed))
  configs += [evaluator.DecodingConfig("sample", temperature=float(t), seed=seed)
              for t in temperatures]
  configs += [evaluator.DecodingConfig("beam", beam_size=int(w), seed=seed) for w in beam_sizes]
  out, seen = [], set()
  for config in configs:
    if config.describe() not in seen:
      seen.add(config.describe())
      out.append(config)
  return out


def _decoding_dict(config: evaluator.DecodingConfig) -> dict[str, Any]:
  """The settings as a dict; greedy shows temperature 0 (its temperature field is unused)."""
  fields = dataclasses.asdict(config)
  if config.method == "greedy":
    fields["temperature"] = 0.0
  return fields


def _temperature_of(config: evaluator.DecodingConfig) -> Optional[float]:
  if config.method == "greedy":
    return 0.0
  return float(config.temperature) if config.method == "sample" else None


def output_statistics(stats_fn: Any, params: Any, inputs: np.ndarray, tokens: np.ndarray, *,
                      batch_size: int) -> dict[str, np.ndarray]:
  """Runs a :func:`rewards.make_statistics_fn` function over N rows in batches.

  Args:
    stats_fn: ``(params, inputs [B, L], tokens [B, T]) -> dict of [B] arrays``.
    params: model parameters.
    inputs: int32 [N, L]; tokens: int32 [N, T].
    batch_size: B; the last batch is padded with all-PAD rows (dropped).

  Returns:
    dict of float32 [N] arrays (``reward``, ``log_prob``, ``entropy``, ``num_tokens``).
  """
  parts: dict[str, list[np.ndarray]] = {}
  for start in range(0, len(inputs), batch_size):
    n = min(batch_size, len(inputs) - start)
    enc = np.zeros((batch_size, inputs.shape[1]), np.int32)
    out = np.zeros((batch_size, tokens.shape[1]), np.int32)
    enc[:n], out[:n] = inputs[start:start + n], tokens[start:start + n]
    for key, value in stats_fn(params, enc, out).items():
      parts.setdefault(key, []).append(np.asarray(value)[:n])
  return {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}


def _diversity_entry(value: float, *, samples_per_input: int, temperature: Optional[float],
                     tokenize: str) -> dict[str, Any]:
  return {"value": value, "samples_per_input": samples_per_input, "temperature": temperature,
          "tokenize": tokenize}


def _reward_summary(stats: Mapping[str, np.ndarray], scores: Sequence[Mapping[str, float]],
                    score_name: str, gamma: float) -> dict[str, Any]:
  """Mean summed reward and its Spearman correlation with the per-example `score_name`."""
  if score_name not in scores[0]:
    raise ValueError(f"evaluate.reward_score {score_name!r} is not a per-example score of this "
                     f"task's metric: use one of {sorted(scores[0])}.")
  values = [s[score_name] for s in scores]
  return {"gamma": gamma, "mean_summed_reward": float(np.mean(stats["reward"])),
          "score": score_name, "spearman": rewards_lib.spearman(stats["reward"], values)}


def _mean_entropy(stats: Mapping[str, np.ndarray]) -> float:
  tokens = float(np.sum(stats["num_tokens"]))
  return float(np.sum(stats["entropy"]) / tokens) if tokens else 0.0


def _write_json_lines(path: str, records: Sequence[Mapping[str, Any]]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_json(path: str, value: Any) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, ensure_ascii=False)


def evaluate(run_dir: str, *, split: Optional[str] = None, num_examples: Optional[int] = None,
             settings: Sequence[DecodingSetting] = ("greedy",),
             temperatures: Sequence[float] = (), beam_sizes: Sequence[int] = (),
             diversity_samples: int = 4, diversity_temperature: float = 1.0,
             tokenize: str = metrics_lib.DEFAULT_TOKENIZE, metric: Optional[str] = None,
             reward_score: Optional[str] = None, gamma: Optional[float] = None,
             batch_size: Optional[int] = None, checkpoint_step: Optional[int] = None,
             output_dir: Optional[str] = None, seed: int = 0,
             training: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
  """Decodes a split with every setting and writes per-example and summary files.

  Args:
    run_dir: the training run directory (``jobs.run`` passes the one the gin files name).
    split: the split to decode (default the run's ``train.eval_split``, else 'validation').
    num_examples: the first N examples of the split (None: all of it).
    settings, temperatures, beam_sizes: the decoding settings (see :func:`resolve_settings`).
    diversity_samples: K samples per input for Self-BLEU / distinct-n (0 or 1 skips it).
    diversity_temperature: the temperature of those samples.
    tokenize: sacrebleu tokenizer for BLEU, Self-BLEU and distinct-n.
    metric: 'rouge', 'gsm8k' or 'translation' (default: the task's, ``tasks.TASK_METRICS``).
    reward_score: per-example score correlated with the implicit reward (default rouge1,
      correct or bleu by metric).
    gamma: discount of the implicit reward (default the run's objective's ``gamma``, else 1).
    batch_size: rows decoded at once (default the run's eval batch size or batch size, cut to
      what the split needs; a multiple of the mesh's data axis).
    checkpoint_step: restore this step instead of the newest.
    output_dir: where files go (default ``<run_dir>/eval/<task>_<split>_step<step>``).
    seed: sampling seed.
    training: the training job's arguments as ``trainer.train`` takes them (``model``,
      ``task``, ``feature_lengths``, ``optimizer``, ``schedule``, ``num_train_steps``,
      ``partitioner``, ``seed``, ``objective``, ...); default: gin's ``train`` bindings.

  Returns:
    ``{'output_dir', 'checkpoint_step', 'task', 'split', 'num_examples', 'settings':
    {name: summary}, 'diversity': summary or None}`` (also written as ``summary.json``).

  Raises:
    checkpoints.CheckpointError: no (matching) checkpoint in the run directory.
    inference.InferenceError: the configuration lacks the trained model's settings.
    ValueError: unknown setting names, metric family or reward score.
  """
  if training is None:
    training = inference.training_settings_from_gin()
  run = dict(training)
  missing = [k for k in ("model", "task", "feature_lengths", "optimizer", "schedule")
             if run.get(k) is None]
  if missing:
    raise inference.InferenceError(
        f"the configuration lacks train.{', train.'.join(missing)}: evaluate with the gin files "
        "the run was trained with.")
  configs = resolve_settings(settings, temperatures, beam_sizes, seed)
  if not configs and diversity_samples < 2:
    raise ValueError("nothing to evaluate: give evaluate.settings (e.g. ['greedy']) or "
                     "evaluate.diversity_samples >= 2.")
  model, task_name = run["model"], run["task"]
  lengths = dict(run["feature_lengths"])
  split = split or run.get("eval_split") or "validation"
  partitioner = run.get("partitioner") or Partitioner()
  if gamma is None:
    gamma = float(getattr(run.get("objective"), "gamma", 1.0))

  from irl_lm.data import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  from irl_lm.data import tasks  # pylint: disable=g-import-not-at-top
  examples = pipeline.get_examples(task_name, split, num_examples=num_examples,
                                   feature_lengths=lengths)
  if not examples:
    raise ValueError(f"split {split!r} of task {task_name!r} has no examples.")
  vocabulary = pipeline.get_vocabulary(task_name)
  metric = metric or tasks.metric_family(task_name)
  reward_score = reward_score or evaluator.PRIMARY_SCORE.get(metric)
  inputs = np.stack([ex["encoder_input_tokens"] for ex in examples]).astype(np.int32)
  references = [ex["targets_text"] for ex in examples]

  data = partitioner.data_size
  k = diversity_samples if diversity_samples >= 2 else 1
  if batch_size is None:
    batch_size = run.get("eval_batch_size") or run.get("batch_size") or 8
  batch_size = max(data, min(batch_size, -(-len(examples) * k // data) * data))
  partitioner.check_batch_size(batch_size)
  max_decode_length = lengths["targets"]
  tx = run["optimizer"](schedule=run["schedule"](total_steps=run.get("num_train_steps")))
  params, param_shardings, step = inference.restore_params(
      run_dir, model=model, tx=tx, partitioner=partitioner,
      input_shapes={"encoder_input_tokens": (batch_size, lengths["inputs"]),
                    "decoder_input_tokens": (batch_size, max_decode_length)},
      step=checkpoint_step, seed=run.get("seed", 0), objective=run.get("objective"))
  output_dir = output_dir or os.path.join(run_dir, "eval", f"{task_name}_{split}_step{step}")
  is_writer = jax.process_index() == 0
  if is_writer:
    os.makedirs(output_dir, exist_ok=True)
  stats_fn = rewards_lib.make_statistics_fn(model, gamma=gamma, partitioner=partitioner,
                                            param_shardings=param_shardings)
  common = {"task": task_name, "split": split, "num_examples": len(examples),
            "checkpoint_step": step, "run_dir": os.path.abspath(run_dir), "metric": metric}

  samplers: dict[tuple[int, float], Any] = {}  # one compile per (top_k, top_p), any temperature

  def decode(config: evaluator.DecodingConfig, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    if config.method == "beam" or config.calculator:
      decode_fn = evaluator.make_decode_fn(model, config, max_decode_length=max_decode_length,
                                           partitioner=partitioner,
                                           param_shardings=param_shardings,
                                           vocabulary=vocabulary)
    else:
      key = (config.top_k, config.top_p)
      if key not in samplers:
        samplers[key] = evaluator.make_sampler(
            model, max_decode_length=max_decode_length, partitioner=partitioner,
            param_shardings=param_shardings, top_k=config.top_k, top_p=config.top_p)
      temperature = _temperature_of(config)
      decode_fn = lambda p, x, r: samplers[key](p, x, r, temperature)
    tokens = evaluator.predict_tokens(decode_fn, params, rows, batch_size=batch_size,
                                      seed=config.seed)
    return tokens, [vocabulary.decode(evaluator.strip_after_eos(row)) for row in tokens]

  summaries: dict[str, Any] = {}
  for config in configs:
    name = config.describe()
    start = time.time()
    tokens, outputs = decode(config, inputs)
    stats = output_statistics(stats_fn, params, inputs, tokens, batch_size=batch_size)
    corpus, per_example = evaluator.score_predictions(metric, references, outputs,
                                                      tokenize=tokenize)
    temperature = _temperature_of(config)
    summary = {
        "setting": name, "decoding": _decoding_dict(config), **common,
        "scores": corpus,
        "diversity": {f"distinct_{n}": _diversity_entry(
            metrics_lib.distinct_n(outputs, n, tokenize=tokenize), samples_per_input=1,
            temperature=temperature, tokenize=tokenize) for n in DISTINCT_ORDERS},
        "entropy": {"mean_token_entropy": _mean_entropy(stats), "unit": "nats",
                    "policy": "softmax(logits), temperature 1, over the output tokens"},
        "reward": _reward_summary(stats, per_example, reward_score, gamma),
        "mean_output_tokens": float(np.mean(stats["num_tokens"])),
        "seconds": time.time() - start,
    }
    records = [{"index": i, "input": ex["inputs_text"], "reference": references[i],
                "output": outputs[i], "scores": per_example[i],
                "implicit_reward": float(stats["reward"][i]),
                "log_prob": float(stats["log_prob"][i]),
                "num_tokens": int(stats["num_tokens"][i]),
                "mean_entropy": float(stats["entropy"][i] / max(stats["num_tokens"][i], 1.0))}
               for i, ex in enumerate(examples)]
    if metric == "gsm8k":  # the final numbers that were compared
      for record in records:
        record["answer"] = metrics_lib.gsm8k_final_number(record["output"])
        record["reference_answer"] = metrics_lib.gsm8k_final_number(record["reference"])
    if is_writer:
      _write_json_lines(os.path.join(output_dir, f"{name}.jsonl"), records)
      _write_json(os.path.join(output_dir, f"{name}_summary.json"), summary)
    summaries[name] = summary
    logging.info("evaluate %s: %s", name, corpus)

  diversity = None
  if diversity_samples >= 2:
    diversity = _diversity(decode, stats_fn, params, inputs, examples, references, metric=metric,
                           reward_score=reward_score, gamma=gamma, k=diversity_samples,
                           temperature=diversity_temperature, tokenize=tokenize, seed=seed,
                           batch_size=batch_size, common=common, output_dir=output_dir,
                           is_writer=is_writer)
  result = {"output_dir": os.path.abspath(output_dir), **common, "settings": summaries,
            "diversity": diversity}
  if is_writer:
    _write_json(os.path.join(output_dir, "summary.json"), result)
    _print_table(result)
  return result


def _diversity(decode: Any, stats_fn: Any, params: Any, inputs: np.ndarray,
               examples: Sequence[Mapping[str, Any]], references: Sequence[str], *, metric: str,
               reward_score: str, gamma: float, k: int, temperature: float, tokenize: str,
               seed: int, batch_size: int, common: Mapping[str, Any], output_dir: str,
               is_writer: bool) -> dict[str, Any]:
  """K samples per input: Self-BLEU, distinct-n, entropy and reward correlation; writes files."""
  start = time.time()
  config = evaluator.DecodingConfig("sample", temperature=temperature, seed=seed)
  rows = np.repeat(inputs, k, axis=0)
  tokens, outputs = decode(config, rows)
  stats = output_statistics(stats_fn, params, rows, tokens, batch_size=batch_size)
  sample_refs = [ref for ref in references for _ in range(k)]
  corpus, per_example = evaluator.score_predictions(metric, sample_refs, outputs,
                                                    tokenize=tokenize)
  groups = [outputs[i * k:(i + 1) * k] for i in range(len(examples))]
  entry = lambda value: _diversity_entry(value, samples_per_input=k, temperature=temperature,
                                         tokenize=tokenize)
  name = f"diversity_K{k}_t{temperature:g}"
  summary = {
      "setting": name, "decoding": _decoding_dict(config), **common,
      "self_bleu": {**entry(metrics_lib.self_bleu(groups, tokenize=tokenize)),
                    "smoothing": "exp", "effective_order": True},
      **{f"distinct_{n}": entry(metrics_lib.distinct_n(outputs, n, tokenize=tokenize))
         for n in DISTINCT_ORDERS},
      "entropy": {"mean_token_entropy": _mean_entropy(stats), "unit": "nats",
                  "samples_per_input": k, "temperature": temperature},
      "scores": corpus,
      "reward": _reward_summary(stats, per_example, reward_score, gamma),
      "seconds": time.time() - start,
  }
  if is_writer:
    records = []
    for i, ex in enumerate(examples):
      samples = [{"output": outputs[j], "scores": per_example[j],
                  "implicit_reward": float(stats["reward"][j]),
                  "num_tokens": int(stats["num_tokens"][j])} for j in range(i * k, (i + 1) * k)]
      records.append({"index": i, "input": ex["inputs_text"], "reference": references[i],
                      "samples": samples})
    _write_json_lines(os.path.join(output_dir, f"{name}.jsonl"), records)
    _write_json(os.path.join(output_dir, f"{name}_summary.json"), summary)
  return summary


def _print_table(result: Mapping[str, Any]) -> None:
  """One line per setting: task scores, distinct-2, entropy, reward correlation."""
  print(f"\nEvaluated {result['task']}/{result['split']} ({result['num_examples']} examples, "
        f"checkpoint {result['checkpoint_step']}) -> {result['output_dir']}")
  for name, s in result["settings"].items():
    scores = ", ".join(f"{k} {v:.2f}" for k, v in s["scores"].items())
    rho = s["reward"]["spearman"]["rho"]
    print(f"  {name:>22}: {scores} | distinct-2 {s['diversity']['distinct_2']['value']:.3f} | "
          f"entropy {s['entropy']['mean_token_entropy']:.3f} | reward~{s['reward']['score']} "
          f"rho {'n/a' if rho is None else f'{rho:.3f}'}")
  d = result.get("diversity")
  if d:
    print(f"  {d['setting']:>22}: Self-BLEU {d['self_bleu']['value']:.2f} "
          f"(K={d['self_bleu']['samples_per_input']}, T={d['self_bleu']['temperature']:g}, "
          f"tokenize {d['self_bleu']['tokenize']}), distinct-1 {d['distinct_1']['value']:.3f}, "
          f"distinct-2 {d['distinct_2']['value']:.3f}")
