"""The console: progress lines, evaluation results, warnings and errors; no INFO chatter from
Orbax, absl, TensorFlow or SentencePiece unless `-v 0`; one line, no traceback, on an error."""
import re

import pytest

from tests.reliability import helpers

PROGRESS = re.compile(r"^step (\d+)/4 \| loss \d+\.\d{4} \| \d+\.\d\d steps/s \| "
                      r"ETA \d+h\d\dm\d\ds$", re.M)


@pytest.mark.slow
def test_training_shows_progress_and_evaluation_and_nothing_else(tmp_path):
  result = helpers.run(tmp_path / "run", "TrainSettings.num_train_steps = 4",
                       "TrainSettings.log_every = 2", "EvalSettings.examples = 8", "EvalSettings.batch_size = 8",
                       "TrainSettings.tensorboard = True")
  assert result.returncode == 0, result.stderr[-3000:]
  assert [int(m.group(1)) for m in PROGRESS.finditer(result.stdout)] == [2, 4]
  assert re.search(r"^step 4 \| eval_validation rouge1 \d+\.\d\d, rouge2 ", result.stdout, re.M)
  assert "Validation (8 examples): rouge1" in result.stdout  # the run's summary
  output = result.stdout + result.stderr
  assert not helpers.INFO_LINE.search(output), helpers.INFO_LINE.search(output).group(0)
  for chatter in ("orbax", "checkpoint_manager", "tensorflow", "oneDNN", "cuInit"):
    assert chatter not in output, chatter
  assert "Traceback" not in output


@pytest.mark.parametrize("binding,message", [
    ("TrainSettings.on_nonfinite = 'sometimes'",
     "error: TrainSettings.on_nonfinite = 'sometimes' is not a mode: use 'stop' (stop at the first "
     "non-finite loss or gradient) or 'skip' (skip that update)."),
    # Fails after the run's Orbax checkpointer is open: it is closed on the way out.
    ("train.init_from = '/nowhere'", "error: no checkpoint at /nowhere: the path does not exist"),
], ids=["bad_value", "after_checkpointer"])
def test_a_failing_start_prints_one_line(tmp_path, binding, message):
  result = helpers.run(tmp_path / "run", binding)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(message), result.stderr[-3000:]
  assert result.stdout == ""


def test_verbosity_0_brings_info_back(tmp_path):
  result = helpers.run(tmp_path / "run", "train.init_from = '/nowhere'", flags=("-v", "0"))
  assert result.returncode == 2
  info = [l for l in result.stderr.splitlines() if helpers.INFO_LINE.match(l)]
  assert any("checkpoint_manager.py" in l for l in info), result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1].startswith("error: no checkpoint at /nowhere")
  assert "Traceback" not in result.stderr
