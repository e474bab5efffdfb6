"""Every mistake a user can make with a file, a flag or a binding ends in one `error:` line and
exit status 2, with nothing left behind that a corrected run would trip over.

Most rows run in-process through `main.execute` (what `python -m irl_lm.main` runs after its
flags); a few run the real command line.
"""
import json
import os
import subprocess
import sys

import pytest

from irl_lm import main as main_lib
from irl_lm import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ("TrainSettings.batch_size = 8", "train.feature_lengths = {'inputs': 16, 'targets': 8}",
        "TrainSettings.num_train_steps = 2", "CheckpointSettings.every = 2",
        "EvalSettings.examples = 0", "TrainSettings.tensorboard = False", "make_schedule.warmup_steps = 0")
GOOD = {"prompt": "a", "completion": "b"}


def _execute(capsys, *bindings, gin_file="gin/iqlearn_tiny.gin"):
  status = main_lib.execute([gin_file], [*TINY, *bindings])
  return status, capsys.readouterr().err


def _assert_one_error_line(status, err, *fragments):
  assert status == 2, err[-3000:]
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
  assert "Traceback" not in err
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def _jsonl(*records):
  return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


DATA_FILES = {  # name -> (file name, content, what the line says)
    "malformed line": ("t.jsonl", _jsonl(GOOD, '{"prompt": "a", "completion": '),
                       "line 2 of {path} is not valid JSON"),
    "missing field": ("t.jsonl", _jsonl(GOOD, {"prompt": "a"}),
                      "line 2 of {path} has no field 'completion'"),
    "no records": ("t.jsonl", "\n\n", "{path} holds no records"),
    "TSV without header": ("t.tsv", "a\tb\nc\td\n",
                           "the first line of {path}, ['a', 'b'], does not name the column(s)"),
    "non-object line": ("t.jsonl", _jsonl(GOOD, "[1, 2]"),
                        "line 2 of {path} is a JSON list, not an object"),
    "null completion": ("t.jsonl", _jsonl(GOOD, {"prompt": "a", "completion": None}),
                        "field 'completion' on line 2 of {path} is null, not text"),
    "not UTF-8": ("t.jsonl", b"\xff\xfe{}\n", "line 1 of {path} is not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(DATA_FILES))
def test_a_bad_data_file_is_one_line_and_leaves_no_run_dir(case, tmp_path, capsys):
  name, content, message = DATA_FILES[case]
  path = tmp_path / name
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content)
  run_dir = tmp_path / "run"
  status, err = _execute(capsys, "train.task = @local_files_task()",
                         f"local_files_task.train_path = '{path}'",
                         "local_files_task.vocabulary = 'stdlib'",
                         "t5_1_1_config.vocab_size = 4096", f"run.run_dir = '{run_dir}'")
  _assert_one_error_line(status, err, message.format(path=path))
  assert not run_dir.exists()  # no config.gin, no empty checkpoints/


@pytest.mark.parametrize("existed", [False, True])
def test_a_user_error_after_the_start_removes_what_the_start_added(existed, tmp_path, capsys,
                                                                   monkeypatch):
  from irl_lm.jobs import common  # pylint: disable=g-import-not-at-top
  run_dir = tmp_path / "run"
  if existed:
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
  from irl_lm.jobs import train as train_job  # pylint: disable=g-import-not-at-top

  def failing_train(run_dir, settings):
    del settings
    os.makedirs(os.path.join(run_dir, "tensorboard"))
    raise common.JobError("train.init_from = '/nowhere': the path does not exist.")

  monkeypatch.setattr(train_job, "train", failing_train)
  status, err = _execute(capsys, f"run.run_dir = '{run_dir}'")
  _assert_one_error_line(status, err, "train.init_from = '/nowhere'")
  assert os.listdir(run_dir) == ["notes.txt"] if existed else not run_dir.exists()


@pytest.mark.parametrize("binding,message", [
    ("run.mode = 'trian'", "unknown run.mode 'trian' (did you mean 'train'?): use one of train,"),
    ("make_schedule.name = 'cosin'", "unknown schedule 'cosin' (make_schedule.name) (did you "
     "mean 'cosine'?)"),
    ("make_optimizer.name = 'adamm'", "unknown optimizer 'adamm' (make_optimizer.name) (did "
     "you mean 'adamw'?)"),
    ("make_schedule.learning_rate = -1.0", "make_schedule.learning_rate = -1.0 must be a "
     "number >= 0"),
    ("TrainSettings.batch_size = 0", "TrainSettings.batch_size = 0 is invalid: use an integer "
     ">= 1."),
    ("TrainSettings.seed = five", "binding 'TrainSettings.seed = five' (--gin_bindings) has an "
     "unquoted value: quote a string (TrainSettings.seed = 'five')"),
    ("IQLearnn.td_weight = 0.0", "unknown gin configurable 'IQLearnn' (bindings string line "),
    ("TrainSettings.sed = 1", "TrainSettings has no parameter 'sed' (bindings string line 9) "
     "(did you mean 'seed'?)"),
])
def test_a_bad_binding_is_one_line_before_anything_is_written(binding, message, tmp_path,
                                                              capsys):
  run_dir = tmp_path / "run"
  status, err = _execute(capsys, f"run.run_dir = '{run_dir}'", binding)
  _assert_one_error_line(status, err, message)
  assert not run_dir.exists()


def test_infer_input_that_is_binary_garbage(tmp_path, capsys):
  garbage = tmp_path / "inputs.jsonl"
  garbage.write_bytes(b"ok\n\x80\x81\x00\xfe")
  out = tmp_path / "out.jsonl"
  status, err = _execute(capsys, "run.mode = 'infer'", f"infer.input_file = '{garbage}'",
                         f"infer.output_file = '{out}'", f"run.run_dir = '{tmp_path}/run'")
  _assert_one_error_line(status, err, f"line 2 of input file {garbage} is not UTF-8 text "
                         "(byte 0x80 at offset 3)")
  assert not out.exists()


def test_evaluate_without_a_checkpoint_names_evaluate(tmp_path, capsys):
  status, err = _execute(capsys, "run.mode = 'evaluate'", f"run.run_dir = '{tmp_path}/run'")
  _assert_one_error_line(status, err, "no checkpoint in", "without run.mode = 'evaluate'")
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["a copy of a shipped file", "a user file with a sibling"])
def test_gin_includes_are_found_next_to_their_file(where, tmp_path, monkeypatch, capsys):
  import shutil  # pylint: disable=g-import-not-at-top
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  monkeypatch.chdir(elsewhere)
  if where == "a user file with a sibling":
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "base.gin").write_text("run.mode = 'from_the_sibling'\n")
    (tmp_path / "conf" / "user.gin").write_text(
        f"include '{REPO}/gin/iqlearn_tiny.gin'\ninclude 'base.gin'\n")
    gin_file, mode = str(tmp_path / "conf" / "user.gin"), "from_the_sibling"
  else:  # the copy's own models/ wins over the shipped gin/models/
    shutil.copytree(os.path.join(REPO, "gin"), tmp_path / "copy")
    with open(tmp_path / "copy" / "models" / "t5_1_1_tiny.gin", "a") as f:
      f.write("run.mode = 'from_the_copy'\n")
    gin_file, mode = str(tmp_path / "copy" / "iqlearn_tiny.gin"), "from_the_copy"
  status, err = _execute(capsys, gin_file=gin_file)
  # Parsing succeeded with the file's own includes: the run stops at the mode they bind.
  _assert_one_error_line(status, err, f"unknown run.mode '{mode}'")
  assert os.listdir(elsewhere) == []


def test_a_missing_gin_file_suggests_the_closest_shipped_one(capsys):
  status, err = _execute(capsys, gin_file="gin/iqlearn_tny.gin")
  _assert_one_error_line(status, err, "gin file 'gin/iqlearn_tny.gin' not found",
                         "did you mean --gin_file=gin/iqlearn_tiny.gin?")


def test_an_empty_run_dir_means_the_default():
  text = "TrainSettings.seed = 0\n"
  default = runner.resolve_run_dir(None, "iqlearn_tiny", text)
  assert default.startswith(os.path.join("runs", "iqlearn_tiny-")) and len(default) == 26
  assert runner.resolve_run_dir("", "iqlearn_tiny", text) == default
  assert runner.resolve_run_dir("  ", "iqlearn_tiny", text) == default
  assert runner.resolve_run_dir("/x/run", "iqlearn_tiny", text) == "/x/run"


def test_a_run_dir_without_config_gin_is_not_resumed_silently(tmp_path):
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  with pytest.raises(runner.RunDirError, match="has checkpoints but no config.gin, so this "
                     "configuration cannot be checked"):
    runner.prepare_run_dir(str(tmp_path), "TrainSettings.seed = 1\n", allow_config_change=False)
  assert not (tmp_path / "config.gin").exists()
  runner.prepare_run_dir(str(tmp_path), "TrainSettings.seed = 1\n", allow_config_change=True)
  assert (tmp_path / "config.gin").read_text() == "TrainSettings.seed = 1\n"


def test_the_config_change_refusal_shows_every_difference_or_counts_the_rest(tmp_path):
  old = "".join(f"train.x{i} = {i}\n" for i in range(20))
  runner.prepare_run_dir(str(tmp_path), old, allow_config_change=False)
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  new = old.replace("x3 = 3", "x3 = 4")
  with pytest.raises(runner.RunDirError) as info:
    runner.prepare_run_dir(str(tmp_path), new, allow_config_change=False)
  assert "(-train.x3 = 3; +train.x3 = 4)" in str(info.value)
  many = "".join(f"train.x{i} = {i + 1}\n" for i in range(20))
  assert runner.config_diff(old, many) == "; ".join(
      [f"-train.x{i} = {i}" for i in range(12)]) + "; … and 28 more"


def _cli(*args, cwd=REPO):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", "irl_lm.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args,status,stderr", [
    (["--help"], 0, None),
    ([], 2, main_lib.USAGE + "\n"),
    (["--gin_fle=gin/iqlearn_tiny.gin"], 2, "error: Unknown command line flag 'gin_fle'. Did "
     "you mean: gin_file ? (python -m irl_lm.main --help lists the flags).\n"),
    (["--gin_file=gin/iqlearn_tiny.gin", "stray"], 2, "error: unexpected argument(s) stray: "
     "pass gin files with --gin_file and settings with --gin_bindings (python -m irl_lm.main "
     "--help).\n"),
])
def test_command_line_conventions(args, status, stderr, tmp_path):
  result = _cli(*args, cwd=tmp_path)
  assert result.returncode == status, result.stderr[-3000:]
  if stderr is None:
    assert "--gin_file" in result.stdout and result.stderr == ""
  else:
    assert result.stderr == stderr
  assert os.listdir(tmp_path) == []


def test_command_line_user_error_is_one_line(tmp_path):
  result = _cli("--gin_file=gin/iqlearn_tiny.gin", "--gin_bindings=TrainSettings.seed = five",
                f"--gin_bindings=run.run_dir = '{tmp_path}/run'")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: binding 'TrainSettings.seed = five' (--gin_bindings) has an unquoted value: quote "
      "a string (TrainSettings.seed = 'five'), or reference a configurable with @five() or a "
      "macro with %five."]
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_shipped_gin_files_resolve_from_anywhere_after_a_non_editable_install(tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  wheels, target, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
  for name in ("irl_lm", "gin"):  # a copy: building writes build/ and *.egg-info next to it
    shutil.copytree(os.path.join(REPO, name), source / name,
                    ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(os.path.join(REPO, "setup.py"), source / "setup.py")
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                  "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=600,
                 cwd=tmp_path)
  (wheel,) = wheels.iterdir()
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                  str(target), str(wheel)], check=True, capture_output=True, timeout=600)
  code = ("from irl_lm import config\n"
          "config.parse(['gin/iqlearn_tiny.gin'], ['TrainSettings.seed = 3'])\n"
          "print(config.GIN_DIR)\n")
  env = dict(os.environ, PYTHONPATH=str(target), JAX_PLATFORMS="cpu")
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  result = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == str(target / "irl_lm" / "gin_files")
  assert os.listdir(elsewhere) == []


@pytest.mark.parametrize("args,status,stderr", [
    (["--help"], 0, None),
    (["--fro=/x", "--to=/y"], 2, "error: Unknown command line flag 'fro'. Did you mean: from ? "
     "(python -m irl_lm.convert --help lists the flags).\n"),
    (["--from=/nowhere", "--to=out"], 2, "error: no checkpoint at /nowhere: the path does not "
     "exist.\n"),
])
def test_convert_command_line(args, status, stderr, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=REPO,
             TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run([sys.executable, "-m", "irl_lm.convert", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == status, result.stderr[-3000:]
  if stderr is None:
    assert "--from" in result.stdout
  else:
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] + "\n" == stderr
  assert os.listdir(tmp_path) == []


def test_experiments_user_error_is_one_line(tmp_path, capsys):
  from irl_lm.experiments import __main__ as experiments_cli  # pylint: disable=g-import-not-at-top
  status = experiments_cli.main(["--sweep=gin/experiments/quick_cpuu.gin", "--print_commands",
                                 f"--out_dir={tmp_path}"])
  captured = capsys.readouterr()
  assert status == 2 and captured.out == ""
  assert captured.err == (
      "error: gin file 'gin/experiments/quick_cpuu.gin' not found (looked in the working "
      f"directory and {os.path.join(REPO, 'gin')}); did you mean "
      "--gin_file=gin/experiments/quick_cpu.gin?\n")


@pytest.mark.parametrize("differs", [False, True])
def test_a_run_dir_whose_config_cannot_be_checked_or_differs(differs, tmp_path, capsys):
  import gin  # pylint: disable=g-import-not-at-top
  from irl_lm import config  # pylint: disable=g-import-not-at-top
  run_dir = tmp_path / "run"
  (run_dir / "checkpoints" / "10").mkdir(parents=True)
  config_gin = None
  if differs:  # the run was trained with another seed and batch size
    config.parse(["gin/iqlearn_tiny.gin"], [*TINY, f"run.run_dir = '{run_dir}'"])
    config_gin = gin.config_str().replace(
        "TrainSettings.seed = 0", "TrainSettings.seed = 12345").replace(
            "TrainSettings.batch_size = 8", "TrainSettings.batch_size = 16")
    (run_dir / "config.gin").write_text(config_gin)
  status, err = _execute(capsys, f"run.run_dir = '{run_dir}'")
  if not differs:
    _assert_one_error_line(status, err, "has checkpoints but no config.gin")
  else:
    _assert_one_error_line(status, err, "holds a run with a different configuration "
                           "(-TrainSettings.batch_size = 16; +TrainSettings.batch_size = 8; "
                           "-TrainSettings.seed = 12345; +TrainSettings.seed = 0); choose "
                           "another directory")
    assert (run_dir / "config.gin").read_text() == config_gin
  assert sorted(os.listdir(run_dir)) == ["checkpoints"] + (["config.gin"] if config_gin else [])
  assert os.listdir(run_dir / "checkpoints") == ["10"]


def test_closest_suggests_only_near_names():
  from irl_lm import errors  # pylint: disable=g-import-not-at-top
  assert errors.closest("cosin", ["constant", "cosine"]) == " (did you mean 'cosine'?)"
  assert errors.closest("nucleus", ["greedy", "sample", "beam"]) == ""
  assert errors.closest_name("iqlearn_tny.gin", ["iqlearn_tiny.gin", "gail_tiny.gin"]) == (
      "iqlearn_tiny.gin")
