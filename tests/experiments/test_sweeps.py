"""Sweeps: expansion, commands, resume, failures recorded, --print_commands."""
import json
import os
import shlex
import subprocess

import pytest

from irl_lm.experiments import __main__ as cli
from irl_lm.experiments import results, sweeps
from tests.experiments import fakes


@pytest.fixture
def toy(tmp_path):
  return sweeps.load_sweep(fakes.sweep_file(tmp_path))


def test_grid_and_points_expand_to_runs_per_seed(toy, tmp_path):
  runs = sweeps.expand(toy, str(tmp_path / "out"))
  assert [(r.point, r.seed) for r in runs] == [
      ("mle", 0), ("mle", 1), ("iqlearn_td_weight0.1", 0), ("iqlearn_td_weight0.1", 1),
      ("iqlearn_td_weight1", 0), ("iqlearn_td_weight1", 1)]
  run = runs[3]
  assert run.run_dir == str(tmp_path / "out" / "toy" / "iqlearn_td_weight0.1" / "seed1")
  assert run.columns == {"method": "iqlearn", "td_weight": 0.1}
  assert run.train_bindings == ("TrainSettings.num_train_steps = 10", "IQLearn.td_weight = 0.1",
                                "TrainSettings.seed = 1")
  argv = sweeps.command(run, "evaluate")
  assert argv[1:3] == ["-m", "irl_lm.main"]
  assert "--gin_bindings=run.mode = 'evaluate'" in argv
  assert argv[-1] == f"--gin_bindings=run.run_dir = '{run.run_dir}'"


def test_duplicate_and_unknown_points_are_refused():
  with pytest.raises(ValueError, match="duplicate"):
    sweeps.make_sweep("s", ["x.gin"], points=[{"name": "a"}, {"name": "a"}])
  with pytest.raises(ValueError, match="unknown points"):
    sweeps.make_sweep("s", ["x.gin"], points=[{"name": "a"}], select=["b"])


def test_every_point_runs_at_every_size_with_the_size_filled_in(tmp_path):
  sweep = sweeps.make_sweep(
      "s", ["a.gin", "models/t5_1_1_{size}.gin"], bindings=["x.init = '/ckpt/{size}/1'"],
      points=[{"name": "mle", "method": "mle", "bindings": ["x.size = '{size}'"],
               "evaluate_bindings": ["y.z = '{size}'"]}],
      grids=[{"method": "iqlearn", "parameter": "IQLearn.td_weight", "column": "td_weight",
              "values": [0.1]}],
      sizes=["base", "xl"], select=["xl/mle", "base/iqlearn_td_weight0.1"])
  runs = sweeps.expand(sweep, str(tmp_path))
  assert [(r.point, r.columns) for r in runs] == [
      ("base/iqlearn_td_weight0.1", {"method": "iqlearn", "td_weight": 0.1, "size": "base"}),
      ("xl/mle", {"method": "mle", "size": "xl"})]
  base, xl = runs
  assert base.run_dir == str(tmp_path / "s" / "base" / "iqlearn_td_weight0.1" / "seed0")
  assert base.gin_files == ("a.gin", "models/t5_1_1_base.gin")
  assert base.train_bindings == ("x.init = '/ckpt/base/1'", "IQLearn.td_weight = 0.1",
                                 "TrainSettings.seed = 0")
  assert xl.gin_files == ("a.gin", "models/t5_1_1_xl.gin")
  assert xl.train_bindings == ("x.init = '/ckpt/xl/1'", "x.size = 'xl'", "TrainSettings.seed = 0")
  assert xl.evaluate_bindings == ("y.z = 'xl'",)


def test_a_size_placeholder_without_sizes_is_refused():
  with pytest.raises(ValueError, match=r"uses \{size\} but sets no sizes"):
    sweeps.make_sweep("s", ["models/t5_1_1_{size}.gin"], points=[{"name": "a"}])
  with pytest.raises(ValueError, match="sets no sizes"):
    sweeps.make_sweep("s", ["a.gin"], points=[{"name": "a", "bindings": ["x = '{size}'"]}])


def _ok(argv):
  return subprocess.CompletedProcess(argv, 0, stdout="", stderr="")


def test_resume_skips_finished_runs(toy, tmp_path):
  out = str(tmp_path / "out")
  runs = sweeps.expand(toy, out)
  fakes.fake_run(runs[0].run_dir)                      # finished: trained and evaluated
  fakes.fake_run(runs[1].run_dir, evaluated=False)     # trained only: evaluate is missing
  calls = []
  statuses = sweeps.execute(toy, out, executor=lambda a: calls.append(a) or _ok(a),
                            log=lambda _: None)
  ran = [(a[-1], "evaluate" if "--gin_bindings=run.mode = 'evaluate'" in a else "train")
         for a in calls]
  assert statuses[0]["skipped"] and not statuses[1].get("skipped")
  assert ran[0] == (f"--gin_bindings=run.run_dir = '{runs[1].run_dir}'", "evaluate")
  assert len(calls) == 1 + 2 * 4  # the half-done run evaluates; four runs do both phases
  with open(os.path.join(out, "toy", sweeps.MANIFEST_FILE)) as f:
    assert len(json.load(f)["runs"]) == 6


def test_failing_command_is_recorded_and_the_sweep_goes_on(toy, tmp_path):
  out = str(tmp_path / "out")
  runs = sweeps.expand(toy, out)

  def executor(argv):
    if runs[2].run_dir in argv[-1]:
      return subprocess.CompletedProcess(argv, 3, stdout="", stderr="Traceback\nBoom: bad\n")
    fakes.fake_run(argv[-1].split("'")[1])
    return _ok(argv)

  statuses = sweeps.execute(toy, out, executor=executor, log=lambda _: None)
  assert [s["status"] for s in statuses] == ["ok", "ok", "failed", "ok", "ok", "ok"]
  assert statuses[2]["phase"] == "train" and statuses[2]["returncode"] == 3
  with open(os.path.join(runs[2].run_dir, sweeps.LOG_FILE)) as f:
    log = f.read()
  assert "Boom: bad" in log and "irl_lm.main" in log
  assert sweeps.read_status(runs[2].run_dir)["status"] == "failed"
  rows = results.collect(out)
  failed = [r for r in rows if r["point"] == runs[2].point and r["seed"] == runs[2].seed]
  assert len(failed) == 1 and failed[0]["status"] == "failed"
  assert failed[0]["failed_phase"] == "train"


def test_print_commands_prints_one_line_per_run_and_runs_nothing(tmp_path, capsys):
  path = fakes.sweep_file(tmp_path)
  out = str(tmp_path / "out")
  assert cli.main([f"--sweep={path}", f"--out_dir={out}", "--print_commands"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 6 and not os.path.exists(out)
  train, evaluate = lines[2].split(" && ")
  argv = shlex.split(train)
  assert argv[:4] == ["python", "-m", "irl_lm.main", "--gin_file=gin/iqlearn_tiny.gin"]
  assert "--gin_bindings=IQLearn.td_weight = 0.1" in argv
  assert argv[-1] == f"--gin_bindings=run.run_dir = '{out}/toy/iqlearn_td_weight0.1/seed0'"
  assert "--gin_bindings=run.mode = 'evaluate'" in shlex.split(evaluate)

  assert cli.main([f"--sweep={path}", "--print_commands", "--pod",
                   "--run_bindings=train.init_from = None"]) == 0
  pod = capsys.readouterr().out.strip().splitlines()
  argv = shlex.split(pod[0].split(" && ")[0])
  assert argv[:3] == ["launch/run.sh", "gin/iqlearn_tiny.gin", "toy/mle/seed0"]
  assert argv[-1] == "--gin_bindings=train.init_from = None"
  assert not any("run.run_dir" in a for a in argv)  # run.sh names the bucket's run dir


def test_the_cli_writes_results_and_figures_unless_told_not_to():
  from irl_lm.experiments import __main__ as experiments_cli  # pylint: disable=g-import-not-at-top
  args = experiments_cli.parse_args(["--sweep=gin/experiments/known_distribution_quick.gin"])
  assert args.results and args.figures
  args = experiments_cli.parse_args(["--sweep=x.gin", "--no-results", "--no-figures"])
  assert not args.results and not args.figures


def test_eval_summary_path_prefers_the_final_step_then_a_selected_checkpoint(tmp_path):
  run_dir = str(tmp_path)
  assert sweeps.eval_summary_path(run_dir) is None
  with open(sweeps.train_summary_path(run_dir), "w") as f:
    json.dump({"final_step": 300}, f)
  selected = tmp_path / "eval" / "task_test_best_nll_step100"
  selected.mkdir(parents=True)
  (selected / "summary.json").write_text("{}")
  assert sweeps.eval_summary_path(run_dir) == str(selected / "summary.json")
  final = tmp_path / "eval" / "task_validation_step300"
  final.mkdir()
  (final / "summary.json").write_text("{}")
  assert sweeps.eval_summary_path(run_dir) == str(final / "summary.json")


def test_point_bindings_name_the_sweep_folder_and_seed(tmp_path):
  sweep = sweeps.make_sweep("s", ["a.gin"], seeds=[0, 3], points=[
      {"name": "mle", "bindings": []},
      {"name": "gail", "bindings": ["train.init_from = '{sweep_dir}/mle/seed{seed}'",
                                    "train.task = @{data_root}"]}])
  runs = sweeps.expand(sweep, str(tmp_path))
  assert runs[3].train_bindings[:2] == (f"train.init_from = '{tmp_path}/s/mle/seed3'",
                                        "train.task = @{data_root}")
