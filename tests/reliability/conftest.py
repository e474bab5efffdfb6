"""Shared by the reliability tests: one uninterrupted 30-step run to compare with."""
import pytest

from tests.reliability import helpers


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory):
  """(run_dir, {step: loss}) of the tiny config trained 30 steps without interruption."""
  run_dir = tmp_path_factory.mktemp("clean") / "run"
  result = helpers.run(run_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  losses = helpers.train_losses(run_dir)
  assert sorted(losses) == list(range(1, 31))
  return run_dir, losses
