"""Multi-host: two `jax.distributed` processes on localhost (CPU, 2 devices each, Gloo), each
reading its own data shard, train like one process with 4 devices on the same global batch, and
their checkpoints restore in a one-process run and the other way round."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.reliability import helpers


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(run_dir, steps, num_processes, *extra):
  """Starts the worker as `num_processes` processes with 4 // num_processes CPU devices each."""
  env = dict(helpers.env(),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={4 // num_processes}")
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, "-m", "tests.reliability.multihost_worker", f"--run_dir={run_dir}",
       f"--steps={steps}", f"--num_processes={num_processes}", f"--process_id={i}",
       f"--port={port}", *extra], cwd=helpers.REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(num_processes)]


def _launch(*jobs):
  """Runs independent jobs `(run_dir, steps, num_processes, *extra)` (see `_start`) at the same
  time, each to the end; returns, per job, each of its processes' stdout."""
  started = [_start(*job) for job in jobs]
  results = []
  for procs in started:
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
      assert p.returncode == 0, err[-4000:]
    results.append([out for out, _ in outputs])
  return results


def _params(run_dir, step):
  """A checkpoint's parameters as numpy (read on one device, whatever wrote it)."""
  path = os.path.join(run_dir, "checkpoints", str(step), "state")
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata
    metadata = metadata.tree if hasattr(metadata, "tree") else metadata
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          metadata)
    state = checkpointer.restore(path, target)
  return jax.tree.map(np.asarray, state["params"])


def _losses(run_dir):  # {step: train/loss}
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return {r["step"]: r["train/loss"] for r in map(json.loads, f) if "train/loss" in r}


def _assert_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6), a, b)


@pytest.mark.slow
def test_two_processes_train_and_checkpoint_like_one(tmp_path):
  one, two = tmp_path / "one", tmp_path / "two"
  outs_one, outs_two = _launch((one, 3, 1), (two, 3, 2))
  assert all(o.strip().endswith("trained steps [1, 2, 3]") for o in outs_one + outs_two)
  assert helpers.checkpoint_steps(one) == helpers.checkpoint_steps(two) == [3]
  np.testing.assert_allclose(list(_losses(two).values()), list(_losses(one).values()),
                             rtol=1e-6)
  _assert_close(_params(two, 3), _params(one, 3))

  # Cross restores: one process resumes the two-process checkpoint, two resume the other's;
  # each restores exactly the parameters that were saved.
  crosses = (("two_then_one", two, 1), ("one_then_two", one, 2))
  for name, source, _ in crosses:
    shutil.copytree(source, tmp_path / name)
  outputs = _launch(*[(tmp_path / name, 5, num_processes, f"--dump_restored={tmp_path / name}.npz")
                      for name, _, num_processes in crosses])
  for (name, source, _), outs in zip(crosses, outputs):
    assert all(o.strip().endswith("trained steps [4, 5]") for o in outs)
    saved = {jax.tree_util.keystr(p): x
             for p, x in jax.tree_util.tree_flatten_with_path(_params(source, 3))[0]}
    with np.load(tmp_path / f"{name}.npz") as restored:
      assert sorted(restored.files) == sorted(saved)
      for key, value in saved.items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)
  # From starts 1e-7 apart (the two topologies sum in different orders), 2 more steps each.
  _assert_close(_params(tmp_path / "two_then_one", 5), _params(tmp_path / "one_then_two", 5))


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_every_worker_at_the_same_step(tmp_path):
  run_dir = tmp_path / "run"
  procs = _start(run_dir, 1000, 2)
  deadline = time.time() + 600
  while len(_losses(run_dir) if os.path.exists(run_dir / "metrics.jsonl") else ()) < 4:
    assert all(p.poll() is None for p in procs) and time.time() < deadline
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)  # JAX's preemption notice reaches every worker
  outputs = [p.communicate(timeout=600) for p in procs]
  assert [p.returncode for p in procs] == [143, 143], outputs[0][1][-3000:]
  step = max(_losses(run_dir))
  assert helpers.checkpoint_steps(run_dir)[-1] == step
  for _, err in outputs:
    assert err.strip().splitlines()[-1] == (
        f"preempted (SIGTERM to a worker of this job) at step {step}: saved checkpoint {step} "
        f"in {run_dir}/checkpoints; rerun the same command to resume from it.")
