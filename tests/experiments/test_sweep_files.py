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
  assert {"quick_cpu.gin", "quick_cpu_reduced.gin", "xsum.gin", "gsm8k.gin",
          "xsum_subsets_base.gin"} <= names


@pytest.mark.parametrize("name", ["xsum", "gsm8k"])
def test_the_paper_sweeps_run_every_point_at_three_sizes_from_their_checkpoints(name, tmp_path):
  sweep = sweeps.load_sweep(os.path.join(config.GIN_DIR, "experiments", f"{name}.gin"))
  runs = sweeps.expand(sweep, str(tmp_path))
  sizes = ("base", "large", "xl")
  assert [r.columns["size"] for r in runs[::len(sweep.seeds)]] == [
      s for s in sizes for _ in range(len(sweep.points) // 3)]
  for run in runs:
    size = run.columns["size"]
    assert run.point.startswith(f"{size}/")
    assert f"gin/models/t5_1_1_{size}.gin" in run.gin_files
    assert (f"train.init_from = 'gs://t5-data/pretrained_models/t5x/t5_1_1_{size}/"
            "checkpoint_1000000'") in run.train_bindings
    assert not any("{size}" in b for b in (*run.gin_files, *run.train_bindings,
                                           *(run.evaluate_bindings or ())))
  (gail,) = [r for r in runs if r.point == "large/gail" and r.seed == 0]
  assert "GAIL.discriminator_size = 'large'" in gail.train_bindings


@pytest.mark.parametrize("name", ["xsum", "gsm8k"])
def test_each_size_of_a_paper_sweep_builds_abstractly(name, tmp_path):
  sweep = sweeps.load_sweep(os.path.join(config.GIN_DIR, "experiments", f"{name}.gin"))
  for run in sweeps.expand(sweep, str(tmp_path))[::len(sweep.seeds) * (len(sweep.points) // 3)]:
    config.parse(run.gin_files, [*run.train_bindings, "run.mode = 'check'",
                                 f"run.run_dir = '{tmp_path}/check'"])
    summary = gin.get_configurable("run")()
    assert summary["param_count"] == {"base": 247_577_856, "large": 783_150_080,
                                      "xl": 2_849_757_184}[run.columns["size"]]


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
