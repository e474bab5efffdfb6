"""The core trains and evaluates with tensorflow, seqio, TFDS and clu impossible to import."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

BLOCKED = ("tensorflow", "tensorflow_text", "tensorflow_datasets", "seqio", "clu")

CHILD = textwrap.dedent("""
    import importlib.abc, json, sys

    BLOCKED = {blocked!r}

    class Blocker(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
          raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

    sys.meta_path.insert(0, Blocker())
    # As if not installed: `import x` fails and importlib.util.find_spec(x) is None.
    for name in BLOCKED:
      sys.modules[name] = None

    import jax, jax.numpy as jnp, optax
    from irl_lm.data import pipeline, tasks
    from irl_lm.jobs import train as train_job
    from irl_lm.models import t5
    from irl_lm.partitioning import Partitioner
    from irl_lm.training.settings import (CheckpointSettings, EvalSettings, RunSettings,
                                          TrainSettings)

    model = t5.EncoderDecoderModel(t5.t5_1_1_config(
        "tiny", vocab_size=480, activation_dtype=jnp.float32, num_encoder_layers=1,
        num_decoder_layers=1))
    summary = train_job.train({run_dir!r}, RunSettings(
        model=model, task="arithmetic_word_problems",
        feature_lengths={{"inputs": 32, "targets": 16}},
        partitioner=Partitioner((1, 1), devices=tuple(jax.devices()[:1])),
        training=TrainSettings(num_train_steps=3, batch_size=4, log_every=1,
                               optimizer=lambda schedule: optax.adam(schedule),
                               schedule=lambda total_steps: optax.constant_schedule(3e-3)),
        evaluation=EvalSettings(examples=4, batch_size=4),
        checkpoints=CheckpointSettings(every=100)))
    try:
      pipeline.get_task("xsum")
      missing_extra = None
    except tasks.MissingExtraError as e:
      missing_extra = str(e)
    print("RESULT " + json.dumps({{
        "imported": sorted(m for m, module in sys.modules.items()
                           if m.split(".")[0] in BLOCKED and module is not None),
        "missing_extra": missing_extra, "eval": sorted(summary.get("eval", {{}}))}}))
""")


@pytest.mark.slow
def test_tiny_training_and_evaluation_run_without_tensorflow(tmp_path):
  run_dir = tmp_path / "run"
  code = CHILD.format(blocked=BLOCKED, run_dir=str(run_dir))
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = {**os.environ, "PYTHONPATH": root, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  result = json.loads(line[len("RESULT "):])
  assert result["imported"] == []
  assert result["missing_extra"] == ("task 'xsum' needs seqio and TensorFlow, which are not "
                                     'installed: pip install "irl_lm[seqio]".')
  records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3]
  assert any("eval_validation/nll" in r for r in records)
  assert not (run_dir / "tensorboard").exists()
  assert "TensorBoard event files need clu and TensorFlow" in proc.stderr
