"""The check job (`run.mode = 'check'`): build a run's model and sharded train state abstractly.

Nothing is allocated and no data is read, so a pod configuration (e.g. `gin/iqlearn_xl.gin` on
a (1 x 8) mesh) is checked on a laptop: the parameter count, the whole state's bytes, the
largest per-device share and an estimate of one device's memory during a train step (state +
gradients + activations, `models.memory.activation_bytes`), compared with the device's memory
when it is known.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

import jax

from irl_lm.jobs import common
from irl_lm.models import memory
from irl_lm.training import state as state_lib
from irl_lm.training.settings import RunSettings


def _device_memory_bytes(device_memory_gib: Union[None, float, str]) -> Optional[float]:
  if device_memory_gib is None:  # the local accelerator's, when it reports one
    stats = getattr(jax.local_devices()[0], "memory_stats", lambda: None)() or {}
    return float(stats["bytes_limit"]) if "bytes_limit" in stats else None
  if isinstance(device_memory_gib, str):
    if device_memory_gib not in memory.DEVICE_MEMORY_GIB:
      raise common.JobError(
          f"check.device_memory_gib = {device_memory_gib!r} is not a known device; use a number "
          f"of GiB or one of {', '.join(memory.DEVICE_MEMORY_GIB)}.")
    device_memory_gib = memory.DEVICE_MEMORY_GIB[device_memory_gib]
  return float(device_memory_gib) * 2 ** 30


@dataclasses.dataclass(frozen=True)
class CheckSettings:
  """What check mode compares the estimate with (gin: `check.*`).

  Attributes:
    device_memory_gib: one device's memory, in GiB or by name (`memory.DEVICE_MEMORY_GIB`,
      e.g. 'tpu_v5e'); default the local accelerator's when it reports one (a CPU does not).
  """
  device_memory_gib: Union[None, float, str] = None


def check(run_dir: str, options: CheckSettings, training: RunSettings) -> dict[str, Any]:
  """Sizes of the run's abstract, sharded train state (`state.layout_summary`) and an estimate
  of one device's memory during a train step.

  Args:
    run_dir: unused (the check writes nothing); kept so every job has the same call.
    options: the device memory to compare with (`CheckSettings`).
    training: the training run's settings (model, objective, mesh, optimiser, batch size,
      feature lengths, steps, seed).

  Returns:
    `layout_summary` plus 'activation_bytes_per_device' (estimate), 'estimated_bytes_per_device'
    (largest state share + its gradients + activations), and with a known device memory
    'device_memory_bytes' and 'fits'.
  """
  del run_dir
  run = training.validate()
  layout, _, _ = common.train_state_layout(run)
  summary = state_lib.layout_summary(layout)
  mesh = summary["mesh"]
  # With gradient accumulation one microbatch's activations live at a time.
  activations = memory.activation_bytes(
      run.model.config, run.training.batch_size // run.training.microbatches,
      run.feature_lengths, data=mesh.get("data", 1), model=mesh.get("model", 1))
  params_share = summary["max_param_bytes_per_device"]
  estimate = summary["max_state_bytes_per_device"] + params_share + activations
  summary.update(activation_bytes_per_device=int(activations),
                 estimated_bytes_per_device=int(estimate))
  limit = _device_memory_bytes(options.device_memory_gib)
  if limit is not None:
    summary.update(device_memory_bytes=int(limit), fits=bool(estimate <= limit))
    if estimate > limit:
      print(f"warning: a train step needs about {estimate / 2**30:.1f} GiB per device "
            f"(state {summary['max_state_bytes_per_device'] / 2**30:.1f}, gradients "
            f"{params_share / 2**30:.1f}, activations {activations / 2**30:.1f}) but a device "
            f"has {limit / 2**30:.1f} GiB: it will not fit; try a larger 'model' mesh axis, "
            f"TrainSettings.microbatches, a smaller batch, or the model config's "
            "remat_policy = 'full'.")
  return summary
