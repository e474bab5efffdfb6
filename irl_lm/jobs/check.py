"""The check job (`run.mode = 'check'`): build a run's model and sharded train state abstractly.

Nothing is allocated and no data is read, so a pod configuration (e.g. `gin/iqlearn_xl.gin` on
a (1 x 8) mesh) is checked on a laptop: the parameter count, the whole state's bytes and the
largest per-device share.
"""
from __future__ import annotations

from typing import Any, Mapping

from irl_lm.jobs import common
from irl_lm.partitioning import Partitioner
from irl_lm.training import state as state_lib


def check(run_dir: str, *, training: Mapping[str, Any]) -> dict[str, Any]:
  """Sizes of the run's abstract, sharded train state (`state.layout_summary`).

  Args:
    run_dir: unused (the check writes nothing); kept so every job has the same call.
    training: the training job's arguments (`model`, `objective`, `partitioner`, `optimizer`,
      `schedule`, `batch_size`, `feature_lengths`, `num_train_steps`, `seed`).
  """
  del run_dir
  settings = common.check_settings(training)
  layout, _, _ = common.train_state_layout(
      model=settings["model"], objective=settings.get("objective"),
      partitioner=settings.get("partitioner") or Partitioner(),
      optimizer=settings["optimizer"], schedule=settings["schedule"],
      batch_size=settings["batch_size"], feature_lengths=settings["feature_lengths"],
      num_train_steps=settings.get("num_train_steps"), seed=settings.get("seed", 0))
  return state_lib.layout_summary(layout)
