"""Exact resume: a run killed with SIGKILL and restarted repeats the uninterrupted run bit for bit.

What makes it exact: the data order is step-indexed (`pipeline.get_batches(start_batch=...)`,
epoch e shuffled with `epoch_seed(seed, e)`), the step RNG lives in the checkpoint, and
`metrics.jsonl` is cut back to the restored step (`trainer.MetricsLog(resume_step=...)`).
"""
import json
import signal

import numpy as np
import pytest
from irl_lm.models import features
from irl_lm.training import trainer
from tests.reliability import helpers

# The numpy source (irl_lm's converter) and the seqio source (a seqio converter).
CONVERTERS = {"numpy": lambda: features.EncDecFeatureConverter(pack=False),
              "seqio": lambda: pytest.importorskip("seqio").EncDecFeatureConverter(pack=False)}


def _batches(start_batch, n, seed=7, converter=None):
  from irl_lm.data import pipeline  # pylint: disable=g-import-not-at-top
  it = pipeline.get_batches("stdlib_docstrings", "validation",
                            feature_lengths={"inputs": 32, "targets": 16}, batch_size=8,
                            shuffle=True, seed=seed, feature_converter=converter,
                            start_batch=start_batch)
  return [next(it)["encoder_input_tokens"] for _ in range(n)]


@pytest.mark.parametrize("source", sorted(CONVERTERS))
def test_batches_from_start_batch_are_the_tail_of_a_fresh_stream(source):
  from irl_lm.data import pipeline  # pylint: disable=g-import-not-at-top
  converter = CONVERTERS[source]()
  reference = _batches(0, 75, converter=converter)  # the validation split has 32 batches of 8: 2 epochs and more
  epoch_rows = [b.tobytes() for b in reference[:32]]
  assert len(set(epoch_rows)) == 32  # one epoch: distinct batches
  assert reference[32].tobytes() != reference[0].tobytes()  # epoch 2 reshuffled
  # Both epochs are the same rows in another order, up to the < 8 each drops as its remainder.
  rows = lambda bs: {r.tobytes() for b in bs for r in b}
  assert len(rows(reference[:32]) & rows(reference[32:64])) > 256 - 8
  for start in (5, 31, 32, 45):
    got = _batches(start, 75 - start, converter=converter)
    for i, (a, b) in enumerate(zip(got, reference[start:])):
      np.testing.assert_array_equal(a, b, err_msg=f"start {start}, batch {start + i}")
  assert pipeline.epoch_seed(7, 1) == pipeline.epoch_seed(7, 1) != pipeline.epoch_seed(7, 2)
  assert pipeline.epoch_seed(None, 3) is None


def test_metrics_log_keeps_only_records_up_to_the_resumed_step(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [{"step": 1, "train/loss": 3.0}, {"step": 2, "train/loss": 2.5},
           {"step": 2, "eval_validation/rouge1": 10.0}, {"step": 3, "train/loss": 2.0}]
  path.write_text("".join(json.dumps(l) + "\n" for l in lines) + '{"step": 4, "tra')
  log = trainer.MetricsLog(str(tmp_path), tensorboard=False, resume_step=2)
  assert [json.loads(l) for l in path.read_text().splitlines()] == lines[:3]
  log.write(3, "train", {"loss": 1.5})
  log.close()
  assert json.loads(path.read_text().splitlines()[-1]) == {"step": 3, "train/loss": 1.5}
  trainer.MetricsLog(str(tmp_path), tensorboard=False, resume_step=0)  # a fresh start
  assert path.read_text() == ""
  trainer.MetricsLog(str(tmp_path / "new"), tensorboard=False, resume_step=0)  # no file: fine


@pytest.mark.slow
def test_sigkill_then_restart_repeats_every_loss_bit_for_bit(tmp_path, clean_run):
  _, clean = clean_run
  run_dir = tmp_path / "run"
  killed = helpers.Training(run_dir)
  # Killed after step 15 (checkpoint 10 committed, steps after it logged: they get replayed).
  killed.wait_for(lambda t: t.logged_step() >= 15 and helpers.checkpoint_steps(run_dir))
  killed.signal(signal.SIGKILL)
  assert killed.wait() == -signal.SIGKILL
  before = helpers.train_losses(run_dir)
  assert max(before) >= 15  # steps after checkpoint 10 were logged, and will be replayed
  assert helpers.checkpoint_steps(run_dir)[-1] in (10, 20)
  resumed_from = helpers.checkpoint_steps(run_dir)[-1]

  result = helpers.run(run_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Resuming from checkpoint {resumed_from} in" in result.stdout
  losses = helpers.train_losses(run_dir)  # fails if a step is recorded twice
  assert sorted(losses) == list(range(1, 31))
  assert losses == clean  # equality of every float, not closeness
  assert helpers.checkpoint_steps(run_dir) == [10, 20, 30]
