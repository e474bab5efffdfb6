"""launch/: every script parses (`bash -n`); the auto-resume loop reruns after preemptions and
crashes and stops on success or a configuration error (driven by a fake `gcloud`); every mesh
gin's mesh covers exactly the chips its header states."""
import glob
import os
import re
import subprocess
import textwrap

import gin
import pytest

from irl_lm import config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "launch", "*.sh")))
MESHES = sorted(glob.glob(os.path.join(REPO, "gin", "meshes", "*.gin")))

# Plays the TPU API: each `ssh --worker=all ... worker.sh train` pops the next outcome from
# $FAKE/outcomes: an exit code, or 'preempt' (the slice disappears, ssh fails with 255).
FAKE_GCLOUD = textwrap.dedent("""\
    #!/usr/bin/env bash
    args="$*"
    echo "${args//$'\n'/ }" >>"$FAKE/calls"
    case "$*" in
      "compute tpus tpu-vm describe"*) cat "$FAKE/tpu_state" ;;
      "compute tpus queued-resources describe"*) [[ -f "$FAKE/qr_state" ]] || exit 1
        cat "$FAKE/qr_state" ;;
      "compute tpus queued-resources delete"*) rm -f "$FAKE/qr_state"
        echo NONE >"$FAKE/tpu_state" ;;
      "compute tpus queued-resources create"*) echo ACTIVE >"$FAKE/qr_state"
        echo READY >"$FAKE/tpu_state" ;;
      *"worker.sh train"*)
        outcome=$(head -n 1 "$FAKE/outcomes"); sed -i 1d "$FAKE/outcomes"
        if [[ "$outcome" == preempt ]]; then
          echo PREEMPTED >"$FAKE/tpu_state"; echo SUSPENDED >"$FAKE/qr_state"; rm -f "$FAKE/rc"
          exit 255
        fi
        echo "$outcome" >"$FAKE/rc"
        exit 1 ;;
      *"worker.sh exit-code"*) [[ -f "$FAKE/rc" ]] || exit 255
        cat "$FAKE/rc" ;;
    esac
    """)


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_scripts_parse(script):
  result = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


def _auto_resume(tmp_path, outcomes, **env):
  fake = tmp_path / "fake"
  (fake / "bin").mkdir(parents=True)
  (fake / "bin" / "gcloud").write_text(FAKE_GCLOUD)
  (fake / "bin" / "gcloud").chmod(0o755)
  (fake / "outcomes").write_text("".join(f"{o}\n" for o in outcomes))
  (fake / "tpu_state").write_text("READY\n")
  (fake / "qr_state").write_text("ACTIVE\n")
  environ = dict(os.environ, PATH=f"{fake}/bin:{os.environ['PATH']}", FAKE=str(fake),
                 REPO_URL="https://example.org/irl_lm.git", BUCKET="gs://bucket/irl_lm",
                 LOG_DIR=str(tmp_path / "logs"), RETRY_SECONDS="0", POLL_SECONDS="0", **env)
  result = subprocess.run([os.path.join(REPO, "launch", "auto_resume.sh"), "gin/iqlearn_xl.gin",
                           "sweep/point/seed0"], env=environ, capture_output=True, text=True,
                          timeout=120)
  calls = (fake / "calls").read_text().splitlines()
  return result, calls


def test_auto_resume_reruns_after_preemption_and_crash_until_done(tmp_path):
  result, calls = _auto_resume(tmp_path, ["143", "preempt", "1", "0"])
  assert result.returncode == 0, result.stderr
  trains = [c for c in calls if "worker.sh train" in c]
  assert len(trains) == 4
  # The run directory and gin file reach every worker, and no empty extra argument.
  assert re.search(r"&& launch/worker\.sh train 'gs://bucket/irl_lm/sweep/point/seed0' "
                   r"'gin/iqlearn_xl\.gin'\s*$", trains[0]), trains[0]
  assert "--worker=all" in trains[0] and "--output-directory=" in trains[0]
  # After the preemption the slice was requested again (spot), and installed, before rerunning.
  creates = [i for i, c in enumerate(calls) if c.startswith("compute tpus queued-resources create")]
  assert len(creates) == 1 and "--spot" in calls[creates[0]]
  train_at = [i for i, c in enumerate(calls) if "worker.sh train" in c]
  assert train_at[1] < creates[0] < train_at[2]
  installs = [i for i, c in enumerate(calls) if "pip install" in c]
  assert len(installs) == 1 and creates[0] < installs[0] < train_at[2]
  assert "preempted or lost (exit 143)" in result.stderr
  assert "preempted or lost (exit 255)" in result.stderr
  assert "failed (exit 1; failure 1 of at most 3)" in result.stderr
  assert os.path.isdir(tmp_path / "logs" / "sweep_point_seed0")  # per-worker logs go here


def test_auto_resume_stops_on_a_configuration_error_and_after_repeated_crashes(tmp_path):
  result, calls = _auto_resume(tmp_path / "a", ["2", "0"])
  assert result.returncode == 2
  assert len([c for c in calls if "worker.sh train" in c]) == 1
  result, calls = _auto_resume(tmp_path / "b", ["1", "1", "0"], MAX_FAILURES="1")
  assert result.returncode == 1
  assert len([c for c in calls if "worker.sh train" in c]) == 2
  assert "failed 2 times in a row (exit 1): giving up" in result.stderr


@pytest.mark.parametrize("path", MESHES, ids=os.path.basename)
def test_mesh_gins_cover_the_stated_chips(path):
  config.parse([path])
  shape = tuple(gin.query_parameter("Partitioner.mesh_shape"))
  assert len(shape) == 2
  stated = re.search(r"^# chips: (\d+)$", open(path).read(), re.M)
  if stated is None:  # sized to whatever devices there are
    assert -1 in shape, f"{path}: state '# chips: N' or use -1"
    return
  assert shape[0] * shape[1] == int(stated.group(1))
  assert -1 not in shape


def test_the_slices_named_in_the_brief_have_meshes():
  names = {os.path.basename(p) for p in MESHES}
  assert {"tpu_v4_32.gin", "tpu_v5e_64.gin", "tpu_v5p_128.gin", "gpu_8.gin"} <= names
