"""reproduce: the pretrained-checkpoint guard and the collect-only path (fake runs, no training)."""
import os

import pytest

from irl_lm import reproduce
from irl_lm.experiments import sweeps
from tests.experiments import fakes


def test_missing_pretrained_checkpoint_stops_the_full_run(tmp_path, monkeypatch):
  monkeypatch.setenv("IRL_LM_DATA_DIR", str(tmp_path / "data"))
  sweep = sweeps.load_sweep(reproduce.QUICK)
  expected = str(tmp_path / "data" / "pretrained" / "t5_tiny_pypackages")
  assert reproduce.missing_checkpoints(sweep) == [expected]
  with pytest.raises(FileNotFoundError, match="pretrain_tiny.gin"):
    reproduce.reproduce(str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")
  os.makedirs(expected)
  assert reproduce.missing_checkpoints(sweep) == []


def test_collect_only_writes_every_file_from_existing_runs(tmp_path, monkeypatch):
  monkeypatch.setenv("IRL_LM_DATA_DIR", str(tmp_path / "data"))
  out = str(tmp_path / "out")
  sweep = sweeps.load_sweep(reproduce.REDUCED)
  runs = sweeps.expand(sweep, out)
  sweeps.write_manifest(sweep, runs, out)
  for run in runs:
    fakes.fake_run(run.run_dir, evaluated=run.evaluate_bindings is not None,
                   curve=((3, 1.0), (6, 2.0)))
  result = reproduce.reproduce(out, reduced=True, run=False)
  for key in ("results", "aggregate", "curves", "report"):
    assert os.path.getsize(result[key]) > 0, key
  for item in result["figures"].values():
    assert os.path.getsize(item["png"]) > 0 and os.path.getsize(item["csv"]) > 0
  assert "from scratch" in open(result["report"]).read()  # the checkpoint is missing here
