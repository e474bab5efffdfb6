"""Checkpoint integrity: checksums saved with every checkpoint and verified on restore; a corrupt
newest checkpoint is named, kept and skipped for the newest good one; never a silent restore."""
import glob
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from irl_lm.checkpoints import integrity, manager
from irl_lm.partitioning import Partitioner


def _state(step, mesh_shape=(-1, 1)):
  """A TrainState-like tree: a data-sharded matrix, a replicated bfloat16 vector, a step."""
  mesh = Partitioner(mesh_shape).mesh
  rng = np.random.default_rng(step)
  w = jax.device_put(rng.normal(size=(64, 96)).astype(np.float32),
                     NamedSharding(mesh, PartitionSpec("data", "model")))
  b = jax.device_put(jnp.asarray(rng.normal(size=(96,)), jnp.bfloat16),
                     NamedSharding(mesh, PartitionSpec()))
  return {"params": {"w": w, "b": b},
          "step": jax.device_put(jnp.int32(step), NamedSharding(mesh, PartitionSpec()))}


def _layout(state):
  return (jax.eval_shape(lambda: state), jax.tree.map(lambda x: x.sharding, state))


def _assert_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x.astype(jnp.float32)),
                                  np.asarray(y.astype(jnp.float32)))


def _saved(tmp_path, steps=(20, 40), keep=None):
  directory = str(tmp_path / "checkpoints")
  ckpt = manager.Checkpointer(directory, keep=keep)
  for step in steps:
    ckpt.save(step, _state(step))
  ckpt.close()
  return directory


def _files(step_dir):
  return sorted(f for f in glob.glob(f"{step_dir}/**", recursive=True) if os.path.isfile(f))


def _data_file(step_dir):
  """The largest array-data file of the step (the random matrix; OCDBT content-addressed)."""
  return max(glob.glob(f"{step_dir}/state/ocdbt.process_0/d/*"), key=os.path.getsize)


def _our_warnings(caplog) -> list:
  """irl_lm's warnings, without Orbax's (e.g. "Waiting for previous save ..." on a busy machine)."""
  return [r.getMessage() for r in caplog.records
          if r.levelname == "WARNING" and f"{os.sep}irl_lm{os.sep}" in r.pathname]


def test_checksums_are_the_sums_of_the_bits_independently_computed():
  x = np.array([[1.5, -2.0, 3.25], [0.0, 7.0, -1e-3]], np.float32)
  words = x.view(np.uint32).reshape(-1).astype(np.uint64)
  weights = (np.arange(1, words.size + 1, dtype=np.uint64) * 0x9E3779B1) % 2**32
  expected = f"{int(words.sum() % 2**32):08x}-{int((words * weights % 2**32).sum() % 2**32):08x}"
  assert integrity.checksums({"x": jnp.asarray(x)}) == {"x": expected}
  # The same values sharded over 8 devices (or 2 x 4) give the same sums: mesh-independent.
  for mesh_shape in ((-1, 1), (2, 4)):
    tree = _state(3, mesh_shape)
    assert integrity.checksums(tree) == integrity.checksums(jax.device_get(tree))
  # One bit of one element changes them.
  y = x.copy()
  y.view(np.uint32)[1, 2] ^= 1 << 7
  assert integrity.checksums({"x": jnp.asarray(y)}) != {"x": expected}


def test_round_trip_is_exact_and_verified(tmp_path):
  directory = _saved(tmp_path)
  assert os.path.isdir(f"{directory}/40/checksums")
  ckpt = manager.Checkpointer(directory)
  # Restored on another mesh: the checksums still verify.
  restored = ckpt.restore(*_layout(_state(0, (2, 4))))
  ckpt.close()
  _assert_equal(restored, _state(40))


def _flip_a_byte(step_dir):
  path = _data_file(step_dir)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x10
  open(path, "wb").write(bytes(data))


def _truncate(step_dir):
  path = _data_file(step_dir)
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])


def _garbage(step_dir):
  for path in _files(step_dir):
    open(path, "wb").write(b"garbage")


def _delete_metadata(step_dir):
  os.remove(f"{step_dir}/state/_METADATA")


@pytest.mark.parametrize("damage,why", [
    (_flip_a_byte, r"checksums differ for params/w"),
    (_truncate, r"reading it failed: ValueError: OUT_OF_RANGE: Error reading \"params.w/"),
    (_garbage, r"its metadata \(state/_METADATA\) is missing or unreadable"),
    (_delete_metadata, r"its metadata \(state/_METADATA\) is missing or unreadable"),
])
def test_corrupt_newest_is_named_kept_and_the_previous_good_one_restored(tmp_path, damage, why,
                                                                        capfd, caplog):
  directory = _saved(tmp_path, keep=2)
  damage(f"{directory}/40")
  damaged = {os.path.relpath(f, f"{directory}/40"): open(f, "rb").read()
             for f in _files(f"{directory}/40")}
  ckpt = manager.Checkpointer(directory, keep=2)
  restored = ckpt.restore(*_layout(_state(0)))
  _assert_equal(restored, _state(20))
  err = capfd.readouterr().err
  assert "Event loop is closed" not in err and "Traceback" not in err
  # One warning names the step, the reason and the fallback.
  [line] = _our_warnings(caplog)
  assert f"checkpoint step 40 ({directory}/40) is corrupt (" in line
  assert re.search(why, line), line
  assert "restoring step 20, the newest good one (kept as 40.corrupt-" in line
  # Kept byte for byte under a name Orbax ignores.
  [aside] = [n for n in os.listdir(directory) if n.startswith("40.corrupt-")]
  assert {os.path.relpath(f, f"{directory}/{aside}"): open(f, "rb").read()
          for f in _files(f"{directory}/{aside}")} == damaged
  assert ckpt.all_steps() == [20]
  # Training on: step 40 is saved again, rotation (keep=2) counts only good ones.
  for step in (40, 60):
    ckpt.save(step, _state(step))
  ckpt.close()
  assert sorted(os.listdir(directory)) == ["40", aside, "60"]
  again = manager.Checkpointer(directory)
  _assert_equal(again.restore(*_layout(_state(0))), _state(60))
  again.close()


def test_no_intact_checkpoint_stops_with_one_sentence_and_deletes_nothing(tmp_path):
  directory = _saved(tmp_path)
  _truncate(f"{directory}/40")
  _delete_metadata(f"{directory}/20")
  before = {n: _files(f"{directory}/{n}") for n in os.listdir(directory)}
  ckpt = manager.Checkpointer(directory)
  with pytest.raises(manager.CheckpointError) as info:
    ckpt.restore(*_layout(_state(0)))
  message = str(info.value)
  assert message.startswith(f"no intact checkpoint in {directory}: checkpoint step 40 (")
  assert "step 20" in message and "\n" not in message and "they are kept" in message
  assert {n: _files(f"{directory}/{n}") for n in os.listdir(directory)} == before


def test_an_explicit_corrupt_step_is_refused_without_fallback(tmp_path):
  directory = _saved(tmp_path)
  _flip_a_byte(f"{directory}/20")
  ckpt = manager.Checkpointer(directory, read_only=True)
  with pytest.raises(manager.CheckpointError, match=r"checkpoint step 20 .* is corrupt \("
                     r"checksums differ for params/w\); choose another step \(available: 20, 40"):
    ckpt.restore(*_layout(_state(0)), step=20)
  _assert_equal(ckpt.restore(*_layout(_state(0))), _state(40))


def test_a_reader_falls_back_but_leaves_corrupt_checkpoints_in_place(tmp_path):
  directory = _saved(tmp_path)
  _flip_a_byte(f"{directory}/40")
  ckpt = manager.Checkpointer(directory, read_only=True)
  _assert_equal(ckpt.restore(*_layout(_state(0))), _state(20))
  assert sorted(os.listdir(directory)) == ["20", "40"]


def test_config_mismatch_is_not_called_corrupt(tmp_path):
  directory = _saved(tmp_path)
  other = {"params": {"w": jnp.zeros((64, 48)), "b": jnp.zeros((96,), jnp.bfloat16)},
           "step": jnp.int32(0)}
  ckpt = manager.Checkpointer(directory)
  with pytest.raises(manager.CheckpointError, match=r"checkpoint .*/40/state does not match the "
                     r"model/optimiser of the current config \(shape differs: params/w "
                     r"checkpoint \(64, 96\) vs model \(64, 48\)\)"):
    ckpt.restore(*_layout(other))
  other["params"]["b"] = jnp.zeros((96,), jnp.float32)
  other["params"]["w"] = jnp.zeros((64, 96))
  with pytest.raises(manager.CheckpointError, match=r"dtype differs: params/b checkpoint "
                     r"bfloat16 vs model float32"):
    ckpt.restore(*_layout(other))
  assert sorted(os.listdir(directory)) == ["20", "40"]


def test_checkpoint_without_checksums_restores_with_a_warning(tmp_path, caplog):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = str(tmp_path / "checkpoints")
  old = ocp.CheckpointManager(directory, item_names=("state",))  # as irl_lm wrote them before
  old.save(20, args=ocp.args.Composite(state=ocp.args.StandardSave(_state(20))))
  old.close()
  ckpt = manager.Checkpointer(directory, read_only=True)
  _assert_equal(ckpt.restore(*_layout(_state(0))), _state(20))
  assert _our_warnings(caplog) == [
      f"checkpoint {directory}/20 has no checksums (written before irl_lm recorded them): "
      "restored without verification."]
