"""Checkpoints of our own runs (Orbax), with clear errors for corrupt or mismatched ones.

Layout: `<run_dir>/checkpoints/<step>/state/` (an Orbax PyTree of the whole TrainState), managed
by `orbax.checkpoint.CheckpointManager` (save every N steps, keep the newest K).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used with the current configuration."""


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Maps 'a/b/c' paths of a pytree (dicts, dataclasses, tuples) to leaf shapes."""
  return {"/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", ()))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def describe_mismatch(expected: dict[str, tuple[int, ...]],
                      found: dict[str, tuple[int, ...]], limit: int = 3) -> str:
  """One sentence naming the first keys/shapes that differ between two `flat_shapes` maps."""
  parts = []
  missing = [k for k in expected if k not in found][:limit]
  extra = [k for k in found if k not in expected][:limit]
  differing = [k for k in expected if k in found and expected[k] != found[k]][:limit]
  if missing:
    parts.append("missing in checkpoint: " + ", ".join(missing))
  if extra:
    parts.append("unexpected in checkpoint: " + ", ".join(extra))
  if differing:
    parts.append("shape differs: " + ", ".join(
        f"{k} checkpoint {found[k]} vs model {expected[k]}" for k in differing))
  return "; ".join(parts)


def _abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)


class Checkpointer:
  """Saves and restores the TrainState of one run.

  Args:
    directory: where checkpoints live (`<run_dir>/checkpoints`); created if missing.
    save_every: save when `step % save_every == 0` (the final step is always saved).
    keep: number of newest checkpoints kept (None keeps all).
    async_save: write in a background thread so training continues meanwhile.
  """

  def __init__(self, directory: str, *, save_every: int = 1000, keep: Optional[int] = 3,
               async_save: bool = True):
    self.directory = os.path.abspath(directory) if "://" not in directory else directory
    self.save_every = save_every
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=1, create=True,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state",))

  def latest_step(self) -> Optional[int]:
    """The newest complete checkpoint's step, or None when there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of all complete checkpoints, ascending."""
    return sorted(self._manager.all_steps())

  def restore(self, abstract_state: Any, shardings: Any, step: Optional[int] = None) -> Any:
    """Restores a TrainState laid out with `shardings`.

    Args:
      abstract_state: the expected TrainState as ShapeDtypeStructs (`jax.eval_shape`).
      shardings: matching pytree of NamedShardings.
      step: which checkpoint (default the latest).

    Returns:
      The restored TrainState (sharded jax.Arrays).

    Raises:
      CheckpointError: no checkpoint, or one whose tree/shapes differ from the model and
        optimiser built from the current config, or unreadable files.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint found in {self.directory}.")
    target = _abstract_with_shardings(abstract_state, shardings)
    state_dir = os.path.join(self.directory, str(step), "state")
    try:
      metadata = ocp.StandardCheckpointer().metadata(state_dir).item_metadata
      found = flat_shapes(metadata.tree if hasattr(metadata, "tree") else metadata)
    except Exception as e:
      raise CheckpointError(
          f"checkpoint {state_dir} is unreadable or corrupt ({type(e).__name__}: "
          f"{str(e)[:200]}); delete it to fall back to an earlier one, or choose a new run "
          "directory (run.run_dir).") from e
    mismatch = describe_mismatch(flat_shapes(abstract_state), found)
    if mismatch:
      raise CheckpointError(
          f"checkpoint {state_dir} does not match the model/optimiser of the current config "
          f"({mismatch}); use the gin config it was written with (its run directory keeps "
          "config.gin), or choose a new run directory (run.run_dir).")
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except Exception as e:  # Orbax raises many types; all mean "this checkpoint won't load".
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} does not match the model/optimiser of the "
          f"current config or is corrupt ({type(e).__name__}: {str(e)[:500]}). Use the gin "
          "config it was written with, or choose a new run directory (run.run_dir).") from e
    return restored.state

  def should_save(self, step: int) -> bool:
    """Whether `step` is on the save interval."""
    return self.save_every > 0 and step % self.save_every == 0

  def save(self, step: int, state: Any) -> None:
    """Saves `state` as checkpoint `step` (asynchronously); a step already on disk is kept."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                       force=True)
    logging.info("saving checkpoint %d to %s", step, self.directory)

  def close(self) -> None:
    """Waits for pending writes and releases resources."""
    self._manager.wait_until_finished()
    self._manager.close()
