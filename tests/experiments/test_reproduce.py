"""reproduce: the pretrained-checkpoint guard and the collect-only path (fake runs, no training)."""
import os

import pytest

from irl_lm import errors, reproduce
from irl_lm.experiments import results, sweeps
from tests.experiments import fakes


def test_missing_pretrained_checkpoint_stops_the_full_run(tmp_path, monkeypatch):
  monkeypatch.setenv("IRL_LM_DATA_DIR", str(tmp_path / "data"))
  sweep = sweeps.load_sweep(reproduce.QUICK)
  expected = str(tmp_path / "data" / "pretrained" / "t5_tiny_pypackages")
  assert reproduce.missing_checkpoints(sweep) == [expected]
  with pytest.raises(FileNotFoundError, match="pretrain_tiny.gin"):
    reproduce.reproduce(str(tmp_path / "out"), protocol_name="docstring")
  assert not os.path.exists(tmp_path / "out")
  os.makedirs(expected)
  assert reproduce.missing_checkpoints(sweep) == []


def _reduced_sweep(tmp_path, monkeypatch):
  """The reduced sweep's (out_dir, sweep, runs), its manifest written, no run made yet."""
  monkeypatch.setenv("IRL_LM_DATA_DIR", str(tmp_path / "data"))
  out = str(tmp_path / "out")
  sweep = sweeps.load_sweep(reproduce.REDUCED)
  runs = sweeps.expand(sweep, out)
  sweeps.write_manifest(sweep, runs, out)
  return out, sweep, runs


def test_collect_only_writes_every_file_from_existing_runs(tmp_path, monkeypatch):
  out, sweep, runs = _reduced_sweep(tmp_path, monkeypatch)
  for run in runs:
    fakes.fake_run(run.run_dir, evaluated=run.evaluate_bindings is not None,
                   curve=((3, 1.0), (6, 2.0)))
  result = reproduce.reproduce(out, reduced=True, run=False)
  for key in ("results", "aggregate", "curves", "report"):
    assert os.path.getsize(result[key]) > 0, key
  for item in result["figures"].values():
    assert os.path.getsize(item["png"]) > 0 and os.path.getsize(item["csv"]) > 0
  assert "from scratch" in open(result["report"]).read()  # the checkpoint is missing here


def _fake_temperature_sweep(run_dir, quality_offset):
  """Adds evaluate mode's K-samples files at T = 0.5 and 1 (2 samples, 4 inputs) to a fake
  run: the same outputs for every method, scores shifted by `quality_offset`."""
  import glob, json  # pylint: disable=g-import-not-at-top,multiple-imports
  (path,) = glob.glob(os.path.join(run_dir, "eval", "*", "summary.json"))
  with open(path) as f:
    evaluation = json.load(f)
  evaluation["diversity_sweep"] = []
  for t, outputs in ((0.5, ("a b", "a b")), (1.0, ("a b", "c d"))):
    setting = f"diversity_K2_t{t:g}"
    evaluation["diversity_sweep"].append({"setting": setting, "decoding": {"temperature": t}})
    with open(os.path.join(os.path.dirname(path), f"{setting}.jsonl"), "w") as f:
      for index in range(4):
        samples = [{"output": o, "scores": {"rouge1": 10.0 * index + quality_offset + k},
                    "implicit_reward": float(k), "log_prob": -float(k), "num_tokens": 2}
                   for k, o in enumerate(outputs)]
        f.write(json.dumps({"index": index, "samples": samples}) + "\n")
  with open(path, "w") as f:
    json.dump(evaluation, f)


def test_collect_only_reads_the_findings_into_the_verdict_table(tmp_path, monkeypatch):
  out, sweep, runs = _reduced_sweep(tmp_path, monkeypatch)
  for run in runs:
    evaluated = run.evaluate_bindings is not None
    fakes.fake_run(run.run_dir, evaluated=evaluated, curve=((3, 1.0), (6, 2.0)))
    if evaluated:
      _fake_temperature_sweep(run.run_dir, 5.0 if run.point.startswith("iqlearn") else 0.0)
  result = reproduce.reproduce(out, reduced=True, run=False, num_resamples=200)
  inputs = results.read_csv(result["inputs"])
  assert len(inputs) == 2 * 2 * 4  # 2 evaluated runs x 2 temperatures x 4 inputs
  first = next(r for r in inputs if r["point"] == "mle" and r["temperature"] == 1.0
               and r["index"] == 2)
  assert (first["quality"], first["distinct"], first["rho_reward"]) == (20.5, 1.0, 1.0)
  sweep_rows = [(r["point"], r["setting"], r["temperature"])
                for r in results.read_csv(result["results"])
                if str(r["setting"]).startswith("diversity_K2")]
  assert sweep_rows == [(p, f"diversity_K2_t{t:g}", t) for p in ("mle", "iqlearn_td_weight0.1")
                        for t in (0.5, 1.0)]
  findings = results.read_csv(result["findings"])
  frontier = next(r for r in findings if r["finding"] == 2)
  # The same diversity at each temperature, every sample 5 points better: a gap of 5.
  assert frontier["comparison"] == "iqlearn_td_weight0.1 - mle"
  assert (frontier["estimate"], frontier["low"], frontier["high"]) == (5.0, 5.0, 5.0)
  assert frontier["verdict"] == "reproduced"
  verdicts = {v["finding"]: v["verdict"] for v in result["verdicts"]}
  assert verdicts[2] == "reproduced" and verdicts[3] == "not measured"
  report_text = open(result["report"]).read()
  assert "## Verdicts" in report_text and "| 2 | IQLearn has a better" in report_text
  assert os.path.getsize(result["figures"]["frontiers"]["png"]) > 0


def test_the_protocol_needs_no_pretrained_checkpoint(tmp_path, monkeypatch):
  monkeypatch.setenv("IRL_LM_DATA_DIR", str(tmp_path / "data"))
  for name in ("quick", "full"):
    for path in reproduce.PROTOCOLS[name]:
      # GAIL starts from the same sweep's MLE run ({sweep_dir}), which the sweep trains first.
      assert reproduce.missing_checkpoints(sweeps.load_sweep(path)) == [], path
  with pytest.raises(errors.UserError, match="unknown protocol 'fast'"):
    reproduce.reproduce(str(tmp_path / "out"), protocol_name="fast")
