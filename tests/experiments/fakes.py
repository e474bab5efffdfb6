"""Fake run directories with the files a train run and evaluate mode write (no training)."""
import json
import os
from typing import Optional


def _write(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(value, f)


def setting_summary(name: str, rouge1: float, *, rho: Optional[float] = 0.3,
                    distinct_2: float = 0.5) -> dict:
  method = "greedy" if name == "greedy" else "beam" if name.startswith("beam") else "sample"
  temperature = 0.0 if method == "greedy" else float(name.split("_t")[1]) if "_t" in name else 1.0
  return {"setting": name,
          "decoding": {"method": method, "temperature": temperature, "beam_size": 4,
                       "top_k": 0, "top_p": 1.0},
          "num_examples": 8, "scores": {"rouge1": rouge1, "rouge2": rouge1 / 4,
                                        "rougeLsum": rouge1},
          "diversity": {"distinct_1": {"value": distinct_2 / 2},
                        "distinct_2": {"value": distinct_2}},
          "entropy": {"mean_token_entropy": 2.0}, "repeated_3gram_rate": 0.25,
          "baselines": {"constant": {"output": "Return x.", "scores": {"rouge1": 12.0}},
                        "name_template": {"rule": "Return the {words}.",
                                          "scores": {"rouge1": 15.0, "rouge2": 3.0}}},
          "best_baseline": {"name": "name_template", "score": 15.0, "metric": "rouge1"},
          "margin": rouge1 - 15.0,
          "reward": {"spearman": {"rho": rho, "p_value": 0.1, "n": 8},
                     "mean_summed_reward": -3.0, "gamma": 1.0}}


def fake_run(run_dir: str, *, step: int = 10, rouge1: float = 20.0, self_bleu: float = 30.0,
             steps_per_second: float = 2.0, settings=("greedy", "beam4", "sample_t0.5"),
             evaluated: bool = True, curve=((5, 10.0),)) -> None:
  """Writes summary.json, metrics.jsonl and (if `evaluated`) the evaluate summary."""
  history = [{"step": s, "loss": 1.0, "steps_per_second": steps_per_second / 10 if i == 0 else
              steps_per_second} for i, s in enumerate((step // 2, step))]
  _write(os.path.join(run_dir, "summary.json"), {
      "final_step": step, "train_seconds": 5.0, "loss_first": 2.0, "loss_last": 1.0,
      "history": history, "eval": {"rouge1": rouge1, "rouge2": 1.0, "rougeLsum": rouge1,
                                   "num_examples": 8.0, "baseline_rouge1": 15.0,
                                   "baseline_rouge2": 3.0, "margin": rouge1 - 15.0,
                                   "repeated_3gram_rate": 0.5, "nll": 2.5}})
  _write(os.path.join(run_dir, "eval_validation_greedy_summary.json"),
         setting_summary("greedy", rouge1))
  with open(os.path.join(run_dir, "eval_validation_greedy.jsonl"), "w") as f:
    for index in (3, 7):
      f.write(json.dumps(example_record(index)) + "\n")
  with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
    for s, value in [*curve, (step, rouge1)]:
      f.write(json.dumps({"step": s, "train/loss": 1.0}) + "\n")
      f.write(json.dumps({"step": s, "eval_validation/rouge1": value,
                          "eval_validation/num_examples": 8.0}) + "\n")
  if evaluated:
    diversity = {**setting_summary("sample_t1", rouge1 / 2),
                 "setting": "diversity_K4_t1",
                 "self_bleu": {"value": self_bleu, "samples_per_input": 4, "temperature": 1.0,
                               "tokenize": "13a"},
                 "distinct_1": {"value": 0.4}, "distinct_2": {"value": 0.8}}
    del diversity["diversity"]
    _write(os.path.join(run_dir, "eval", f"stdlib_docstrings_validation_step{step}",
                        "summary.json"),
           {"settings": {n: setting_summary(n, rouge1) for n in settings},
            "diversity": diversity, "checkpoint_step": step, "task": "stdlib_docstrings",
            "split": "validation", "num_examples": 8})
    for name in settings:
      path = os.path.join(run_dir, "eval", f"stdlib_docstrings_validation_step{step}",
                          f"{name}.jsonl")
      with open(path, "w") as f:
        f.write(json.dumps(example_record(5)) + "\n")


def example_record(index: int) -> dict:
  """A per-example record as the evaluator writes it (score, length, reward from `index`)."""
  return {"index": index, "input": "def f(): pass", "reference": "Do f.", "output": "Return f.",
          "scores": {"rouge1": 10.0 * index, "rouge2": 0.0}, "num_tokens": index + 1,
          "implicit_reward": -0.5 * index, "log_prob": -1.0 * index}


SWEEP_GIN = """
import irl_lm.experiments.sweeps
Sweep.name = 'toy'
Sweep.gin_files = ['gin/iqlearn_tiny.gin']
Sweep.seeds = [0, 1]
Sweep.bindings = ["TrainSettings.num_train_steps = 10"]
Sweep.evaluate_bindings = ["evaluate.settings = ['greedy']"]
Sweep.points = [{'name': 'mle', 'method': 'mle', 'td_weight': 0.0,
                 'bindings': ['IQLearn.td_weight = 0.0']}]
Sweep.grids = [{'method': 'iqlearn', 'parameter': 'IQLearn.td_weight', 'column': 'td_weight',
                'values': [0.1, 1.0]}]
"""


def sweep_file(tmp_path) -> str:
  path = os.path.join(str(tmp_path), "toy.gin")
  with open(path, "w") as f:
    f.write(SWEEP_GIN)
  return path
