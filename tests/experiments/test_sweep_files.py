"""Every sweep in gin/experiments/ parses, and its first run's configuration builds abstractly
(`run.mode = 'check'`) with the evaluate bindings parsing too."""
import glob
import os

import gin
import pytest

from irl_lm import config
from irl_lm.experiments import sweeps

SWEEP_FILES = sorted(glob.glob(os.path.join(config.GIN_DIR, "experiments", "*.gin")))


def test_there_are_cpu_and_paper_sweeps():
  names = {os.path.basename(p) for p in SWEEP_FILES}
  assert {"quick_cpu.gin", "quick_cpu_reduced.gin", "xsum_base.gin", "xsum_large.gin",
          "xsum_xl.gin", "gsm8k_base.gin", "gsm8k_large.gin", "gsm8k_xl.gin",
          "xsum_subsets_base.gin"} <= names


def _gin_file_exists(path: str) -> bool:
  try:
    config.resolve_gin_file(path)
  except config.ConfigError:
    return False
  return True


@pytest.mark.parametrize("path", SWEEP_FILES, ids=os.path.basename)
def test_sweep_parses_and_its_first_run_builds(path, tmp_path):
  sweep = sweeps.load_sweep(path)
  runs = sweeps.expand(sweep, str(tmp_path))
  assert runs and len(runs) == len(sweep.points) * len(sweep.seeds)
  assert len({r.run_dir for r in runs}) == len(runs)
  with open(path) as f:
    head = f.read(2000)
  assert "python -m irl_lm." in head  # its exact command at the top
  missing = sorted({f for r in runs for f in r.gin_files if not _gin_file_exists(f)})
  assert not missing, f"the sweep names gin files that do not exist: {missing}"
  run = runs[0]
  config.parse(run.gin_files, [*run.train_bindings, "run.mode = 'check'",
                               f"run.run_dir = '{tmp_path}/check'"])
  summary = gin.get_configurable("run")()
  assert summary["dry_run"] and summary["param_count"] > 0
  if run.evaluate_bindings is not None:
    config.parse(run.gin_files, [*run.train_bindings, "run.mode = 'evaluate'",
                                 *run.evaluate_bindings])
  # Every point's own gin files and bindings parse (no build: fast).
  for point_run in runs[::len(sweep.seeds)]:
    config.parse(point_run.gin_files, point_run.train_bindings)
