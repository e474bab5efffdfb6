r"""Evaluate mode: score a training run's newest checkpoint under several decoding settings.

  python -m irl_lm.main --gin_file=gin/iqlearn_arithmetic_tiny.gin \
      --gin_bindings="run.mode = 'evaluate'" \
      --gin_bindings="evaluate.settings = ['greedy', 'greedy_calc', 'beam4']" \
      --gin_bindings="evaluate.temperatures = [0.25, 0.5, 0.75, 1.0]"

The run directory, model, task, feature lengths, optimiser and mesh are the training run's (the
same gin files; ``run.*`` and ``evaluate.*`` bindings (:class:`EvaluateSettings`) do not change
the run directory), and the
checkpoint is restored with :func:`irl_lm.jobs.common.restore_run`; the work is
:class:`irl_lm.evaluation.evaluator.Evaluator`'s.

For every decoding setting (names as :meth:`DecodingConfig.describe` writes them: ``greedy``,
``sample_t0.7``, ``sample_t1_k40_p0.9``, ``beam4``, ``greedy_calc`` / ``sample_t0.5_calc`` for
GSM8k's calculator), the split is decoded and written to
``<run_dir>/eval/<task>_<split>_step<step>/``:

* ``<setting>.jsonl`` - one line per example: ``index``, ``input``, ``reference``, ``output``,
  ``scores`` (the task's per-example scores), ``implicit_reward`` (summed over the output's
  tokens, docs/design.md#rewards), ``log_prob``, ``num_tokens``, ``mean_entropy``.
* ``<setting>_summary.json`` - the task scores (ROUGE-1/2/Lsum, GSM8k accuracy, or BLEU/chrF),
  distinct-1/2 of the outputs, the mean per-token policy entropy, the mean summed implicit reward
  and its Spearman correlation with the per-example task score.

Diversity (docs/design.md#diversity): K samples per input at one temperature (default K = 4,
temperature 1.0) give Self-BLEU, distinct-1/2 over all samples, the mean entropy and the
reward-score correlation over all K*N samples, in ``diversity_K<K>_t<temp>.jsonl`` and
``..._summary.json``. Each diversity number is written with the K, temperature and tokenisation
it was measured with. ``evaluate.diversity_temperatures`` adds the same K samples at each of
several temperatures (a temperature frontier of diversity against sample quality), listed
under ``diversity_sweep``. ``summary.json`` collects every summary.

Checkpoint selection: ``evaluate.select_by = 'nll'`` restores, of the run's checkpoints, the
one with the lowest teacher-forced validation NLL that the train job logged
(``eval_<EvalSettings.split>/nll`` in ``metrics.jsonl``, every ``EvalSettings.every`` steps; keep
them with ``CheckpointSettings.every = EvalSettings.every`` and ``CheckpointSettings.keep = None``)
and writes to ``<task>_<split>_best_nll_step<step>/``, its summary naming the selection
(``checkpoint_selection``: metric, value, candidates, final step).

On the built-in arithmetic task every summary also has an ``arithmetic`` entry
(:mod:`irl_lm.evaluation.arithmetic`): for each setting the accuracy with its binomial standard
error, the rate of exactly valid solutions and how many used each solution order; for the
diversity samples the accuracy, the valid rate, distinct valid orders and order entropy per
question against the train data's, and the within-question AUROC of the summed implicit reward
and of log pi for correct vs incorrect samples.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional, Sequence, Union

from absl import logging

from irl_lm.decoding.config import DecodingConfig
from irl_lm.evaluation import metrics as metrics_lib
from irl_lm.evaluation import evaluator as evaluator_lib
from irl_lm.evaluation.evaluator import Evaluator
from irl_lm.checkpoints import manager as checkpoints_lib
from irl_lm.jobs import common
from irl_lm.training import validation
from irl_lm.training.settings import RunSettings

DecodingSetting = Union[str, DecodingConfig]


def resolve_settings(settings: Sequence[DecodingSetting] = ("greedy",),
                     temperatures: Sequence[float] = (), beam_sizes: Sequence[int] = (),
                     seed: int = 0) -> list[DecodingConfig]:
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
  configs = [setting if isinstance(setting, DecodingConfig)
             else DecodingConfig.from_name(setting, seed=seed) for setting in settings]
  configs += [DecodingConfig("sample", temperature=float(t), seed=seed) for t in temperatures]
  configs += [DecodingConfig("beam", beam_size=int(w), seed=seed) for w in beam_sizes]
  out, seen = [], set()
  for config in configs:
    if config.describe() not in seen:
      seen.add(config.describe())
      out.append(config)
  return out


@dataclasses.dataclass(frozen=True)
class EvaluateSettings:
  """What evaluate mode decodes and how it scores (gin: `evaluate.*`).

  Attributes:
    split: the split to decode (default the run's ``EvalSettings.split``).
    num_examples: a seeded random subset of N examples of the split, the same as the train
      job's evaluation of N (None: all of it); their indices are in ``summary.json``.
    settings, temperatures, beam_sizes: the decoding settings (see :func:`resolve_settings`).
    diversity_samples: K samples per input for Self-BLEU / distinct-n (0 or 1 skips it).
    diversity_temperature: the temperature of those samples.
    tokenize: sacrebleu tokenizer for BLEU, Self-BLEU and distinct-n.
    metric: 'rouge', 'gsm8k' or 'translation' (default: the task's).
    reward_score: per-example score correlated with the implicit reward (default rouge1,
      correct or bleu by metric).
    gamma: discount of the implicit reward (default the run's objective's ``gamma``, else 1).
    batch_size: rows decoded at once (default the run's eval batch size or batch size, cut to
      what the split needs; a multiple of the mesh's data axis).
    checkpoint_step: restore this step instead of the newest.
    output_dir: where files go (default ``<run_dir>/eval/<task>_<split>_step<step>``).
    seed: sampling seed.
    diversity_temperatures: also K samples at each of these temperatures (``diversity_sweep``).
    select_by: 'nll' (or another teacher-forced validation metric the train job logged):
      restore the checkpoint with its lowest value (module docstring); None: the newest (or
      `checkpoint_step`).
    diversity_calculator: draw the K samples with calculator forcing (arithmetic / GSM8k:
      sample quality then measures the solution, not the model's multiplication).
  """
  split: Optional[str] = None
  num_examples: Optional[int] = None
  settings: Sequence[DecodingSetting] = ("greedy",)
  temperatures: Sequence[float] = ()
  beam_sizes: Sequence[int] = ()
  diversity_samples: int = 4
  diversity_temperature: float = 1.0
  tokenize: str = metrics_lib.DEFAULT_TOKENIZE
  metric: Optional[str] = None
  reward_score: Optional[str] = None
  gamma: Optional[float] = None
  batch_size: Optional[int] = None
  checkpoint_step: Optional[int] = None
  output_dir: Optional[str] = None
  seed: int = 0
  diversity_temperatures: Sequence[float] = ()
  select_by: Optional[str] = None
  diversity_calculator: bool = False


def evaluate(run_dir: str, options: EvaluateSettings, training: RunSettings) -> dict[str, Any]:
  """Decodes a split with every setting and writes per-example and summary files.

  Args:
    run_dir: the training run directory (the runner passes the one the gin files name).
    options: what to decode and how to score it (`EvaluateSettings`).
    training: the training run's settings (``model``, ``task``, ``feature_lengths``, the
      optimiser, ...).

  Returns:
    ``{'output_dir', 'checkpoint_step', 'task', 'split', 'num_examples', 'settings':
    {name: summary}, 'diversity': summary or None, 'diversity_sweep': [summary, ...],
    'checkpoint_selection': {...} or None}`` (also written as ``summary.json``).

  Raises:
    checkpoints.CheckpointError: no (matching) checkpoint in the run directory.
    errors.SettingError: the configuration lacks the trained model's settings.
    common.JobError: nothing to evaluate, or `select_by` finds no checkpointed step with a
      logged value.
    ValueError: unknown setting names, metric family or reward score.
  """
  run = training.require()
  diversity_samples, seed = options.diversity_samples, options.seed
  configs = resolve_settings(options.settings, options.temperatures, options.beam_sizes, seed)
  if not configs and diversity_samples < 2:
    raise common.JobError("nothing to evaluate: give evaluate.settings (e.g. ['greedy']) or "
                          "evaluate.diversity_samples >= 2.")
  common.require_checkpoint(run_dir, "evaluate")
  task_name, lengths = run.task, dict(run.feature_lengths)
  checkpoint_step, selection = options.checkpoint_step, None
  if options.select_by is not None:
    if checkpoint_step is not None:
      raise common.JobError("give evaluate.checkpoint_step or evaluate.select_by, not both.")
    selection = select_checkpoint(run_dir, split=run.evaluation.split, metric=options.select_by)
    checkpoint_step = selection["step"]
  split = options.split or run.evaluation.split
  gamma = options.gamma
  if gamma is None:
    gamma = float(getattr(run.objective, "gamma", 1.0))

  from irl_lm.data import pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow)
  examples = pipeline.get_examples(task_name, split, num_examples=options.num_examples,
                                   feature_lengths=lengths, seed=pipeline.EVAL_SUBSET_SEED)
  k = diversity_samples if diversity_samples >= 2 else 1
  restored = common.restore_run(run_dir, run, rows=len(examples) * k,
                                batch_size=options.batch_size,
                                checkpoint_step=checkpoint_step, mode="evaluate")
  evaluator = Evaluator(restored.model, task=task_name, split=split, feature_lengths=lengths,
                        batch_size=restored.batch_size, partitioner=restored.partitioner,
                        param_shardings=restored.param_shardings, examples=examples,
                        scoring=evaluator_lib.Scoring(
                            metric=options.metric, gamma=gamma,
                            reward_score=options.reward_score, tokenize=options.tokenize))
  step = restored.step
  selected = f"_best_{options.select_by}" if selection else ""
  output_dir = options.output_dir or os.path.join(run_dir, "eval",
                                                  f"{task_name}_{split}{selected}_step{step}")
  writer = common.is_writer()
  if writer:
    os.makedirs(output_dir, exist_ok=True)
  context = {"task": task_name, "split": split, "num_examples": evaluator.num_examples,
             "checkpoint_step": step, "run_dir": os.path.abspath(run_dir),
             "metric": evaluator.metric, "checkpoint_selection": selection}

  def write(name: str, summary: dict[str, Any], records: list[dict[str, Any]]) -> None:
    if writer:
      common.write_json_lines(os.path.join(output_dir, f"{name}.jsonl"), records)
      common.write_json(os.path.join(output_dir, f"{name}_summary.json"), summary)

  summaries: dict[str, Any] = {}
  for config in configs:
    summary, records = evaluator.evaluate(restored.params, config)
    summary.update(context)
    write(summary["setting"], summary, records)
    summaries[summary["setting"]] = summary
    logging.info("evaluate %s: %s", summary["setting"], evaluator_lib.describe(summary))

  diversity, sweep = None, []
  if diversity_samples >= 2:
    first, temperatures = options.diversity_temperature, options.diversity_temperatures
    for i, temperature in enumerate([first, *(
        t for t in temperatures if float(t) != float(first))]):
      summary, records = evaluator.diversity(restored.params, samples_per_input=k,
                                             temperature=float(temperature), seed=seed,
                                             calculator=options.diversity_calculator)
      summary.update(context)
      write(summary["setting"], summary, records)
      diversity = diversity or summary
      if i > 0 or first in temperatures:
        sweep.append(summary)
  elif options.diversity_temperatures:
    raise common.JobError("evaluate.diversity_temperatures needs evaluate.diversity_samples "
                          ">= 2 (the K samples per input at each temperature).")
  sweep.sort(key=lambda summary: summary["decoding"]["temperature"])
  result = {"output_dir": os.path.abspath(output_dir), **context, "settings": summaries,
            "diversity": diversity, "diversity_sweep": sweep,
            "example_indices": [int(ex["index"]) for ex in evaluator.examples]}
  if writer:
    common.write_json(os.path.join(output_dir, "summary.json"), result)
    _print_table(result)
  return result


def select_checkpoint(run_dir: str, *, split: str, metric: str = "nll") -> dict[str, Any]:
  """The run's checkpoint with the lowest logged ``eval_<split>/<metric>``
  (`validation.select_step` over ``metrics.jsonl`` and the checkpoints on disk).

  Returns:
    {'metric': 'eval_<split>/<metric>', 'step', 'value', 'candidates' (checkpointed steps with
    a value), 'final_step' (the newest checkpoint)}.

  Raises:
    common.JobError: no checkpointed step has a logged value.
  """
  checkpointer = checkpoints_lib.Checkpointer(os.path.join(run_dir, "checkpoints"),
                                              async_save=False, read_only=True)
  try:
    steps = checkpointer.all_steps()
  finally:
    checkpointer.close()
  records = []
  path = os.path.join(run_dir, "metrics.jsonl")
  if os.path.isfile(path):
    with open(path) as f:
      records = [json.loads(line) for line in f if line.strip()]
  key = f"eval_{split}/{metric}"
  chosen = validation.select_step(records, steps, split=split, metric=metric)
  if chosen is None:
    raise common.JobError(
        f"evaluate.select_by = '{metric}' finds no checkpoint of {run_dir} with {key} in "
        "metrics.jsonl: train with EvalSettings.every = CheckpointSettings.every and "
        "CheckpointSettings.keep = None (every evaluated step kept), or drop evaluate.select_by.")
  candidates = sum(1 for r in records if key in r and int(r["step"]) in set(steps))
  return {"metric": key, "step": chosen[0], "value": chosen[1], "candidates": candidates,
          "final_step": max(steps)}


def _print_table(result: Mapping[str, Any]) -> None:
  """One line per setting: task scores, best baseline and margin, distinct-2, looping rate,
  entropy, reward correlation; then the baselines' outputs / rules."""
  print(f"\nEvaluated {result['task']}/{result['split']} ({result['num_examples']} examples, "
        f"checkpoint {result['checkpoint_step']}) -> {result['output_dir']}")
  for name, s in result["settings"].items():
    scores = evaluator_lib.describe(s)
    rho = s["reward"]["spearman"]["rho"]
    print(f"  {name:>22}: {scores} | distinct-2 {s['diversity']['distinct_2']['value']:.3f} | "
          f"entropy {s['entropy']['mean_token_entropy']:.3f} | reward~{s['reward']['score']} "
          f"rho {'n/a' if rho is None else f'{rho:.3f}'}")
  first = next(iter(result["settings"].values()), {})
  for name, b in (first.get("baselines") or {}).items():
    scores = ", ".join(f"{k} {v:.2f}" for k, v in b["scores"].items())
    what = f"output {b['output']!r}" if "output" in b else f"rule {b['rule']}"
    print(f"  {'baseline ' + name:>22}: {scores} | {what}")
  d = result.get("diversity")
  if d:
    print(f"  {d['setting']:>22}: Self-BLEU {d['self_bleu']['value']:.2f} "
          f"(K={d['self_bleu']['samples_per_input']}, T={d['self_bleu']['temperature']:g}, "
          f"tokenize {d['self_bleu']['tokenize']}), distinct-1 {d['distinct_1']['value']:.3f}, "
          f"distinct-2 {d['distinct_2']['value']:.3f}")
  rows = list(result["settings"].items()) + ([(d["setting"], d)] if d else [])
  for name, summary in rows:
    if summary.get("arithmetic", {}).get("num_questions"):
      print(f"  {name:>22}: {_arithmetic_line(summary['arithmetic'])}")


def _arithmetic_line(a: Mapping[str, Any]) -> str:
  """The arithmetic task's exact figures (`irl_lm.evaluation.arithmetic`) in one line."""
  fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
  line = (f"accuracy {a['accuracy']:.2f} +- {a['accuracy_se']:.2f}, valid solutions "
          f"{a['valid_rate']:.1f}% (calculations {a['valid_rate_calculations']:.1f}%)")
  if "order_counts" in a:
    return (f"{line}, valid per order {a['order_counts']}; structure "
            f"{a['valid_rate_structure']:.1f}%, per order {a['structure_order_counts']}")
  orders = lambda o: (f"distinct valid orders {o['distinct_valid_orders']:.2f} (data "
                      f"{o['data_distinct_valid_orders']:.2f}), order entropy "
                      f"{fmt(o['order_entropy'])} (data {fmt(o['data_order_entropy'])}, at n "
                      f"{fmt(o['data_order_entropy_at_n'])}; {o['order_entropy_questions']} q)")
  return (f"{line}, {orders(a)}, AUROC reward {fmt(a['reward_auroc'])} "
          f"log pi {fmt(a['logprob_auroc'])} ({a['auroc_questions']} q); structure "
          f"{a['structure']['valid_rate']:.1f}%: {orders(a['structure'])}")
