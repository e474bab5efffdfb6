"""The command-line job's choice of host allocator (irl_lm/cpu/host_allocator.py)."""
import os
import subprocess
import sys
import textwrap

import pytest

from irl_lm.cpu import host_allocator as ha

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Any shared library that is harmless to preload stands in for an allocator.
STAND_IN = "/usr/lib/x86_64-linux-gnu/libm.so.6"


def test_auto_preloads_the_first_installed_candidate_before_the_existing_preload(tmp_path):
  missing, present = str(tmp_path / "missing.so"), tmp_path / "libtcmalloc_minimal.so.4"
  present.write_bytes(b"")
  env = ha.preload_environment({"LD_PRELOAD": "/opt/libfoo.so", "HOME": "/h"},
                               candidates=(missing, str(present)))
  assert env["LD_PRELOAD"] == f"{present} /opt/libfoo.so"
  assert env[ha.CHOSEN_ENV] == str(present)
  assert env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"] == str(1 << 40)
  assert env["HOME"] == "/h"


def test_no_reexec_when_not_found_opted_out_already_chosen_or_already_preloaded(tmp_path):
  lib = tmp_path / "libtcmalloc.so.4"
  lib.write_bytes(b"")
  found = (str(lib),)
  assert ha.preload_environment({}, candidates=(str(tmp_path / "none.so"),)) is None
  assert ha.preload_environment({ha.ENV: "system"}, candidates=found) is None
  assert ha.preload_environment({ha.CHOSEN_ENV: str(lib)}, candidates=found) is None
  assert ha.preload_environment({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},
                                candidates=found) is None
  assert ha.preload_environment({}, candidates=found) is not None


def test_auto_preloads_only_when_jax_runs_on_the_cpu(tmp_path):
  lib = tmp_path / "libtcmalloc.so.4"
  lib.write_bytes(b"")
  found = (str(lib),)
  assert ha.jax_runs_on_cpu({"JAX_PLATFORMS": "cpu"})
  assert ha.jax_runs_on_cpu({"JAX_PLATFORMS": "cpu,cuda"})
  assert not ha.jax_runs_on_cpu({"JAX_PLATFORMS": "cuda,cpu"})
  assert not ha.jax_runs_on_cpu({"JAX_PLATFORM_NAME": "tpu"})
  assert ha.preload_environment({"JAX_PLATFORMS": "cuda"}, candidates=found) is None
  assert ha.preload_environment({"JAX_PLATFORMS": "cpu"}, candidates=found) is not None
  # An explicit library is the user's choice, whatever the backend.
  assert ha.preload_environment({"JAX_PLATFORMS": "cuda", ha.ENV: str(lib)}) is not None


def test_an_explicit_library_is_used_and_a_missing_one_is_one_clear_error(tmp_path):
  lib = tmp_path / "libmine.so"
  lib.write_bytes(b"")
  assert ha.preload_environment({ha.ENV: str(lib)}, candidates=())["LD_PRELOAD"] == str(lib)
  with pytest.raises(ValueError, match="neither 'auto', 'system' nor an existing library"):
    ha.preload_environment({ha.ENV: str(tmp_path / "nope.so")})


def _run_probe(tmp_path, env_overrides):
  """Runs a module that re-executes itself through `reexec_with_allocator` and then reports
  its LD_PRELOAD and whether the preloaded library is mapped into the process."""
  (tmp_path / "probe.py").write_text(textwrap.dedent("""
      import os, sys
      from irl_lm.cpu import host_allocator
      host_allocator.reexec_with_allocator("probe", sys.argv)
      maps = open("/proc/self/maps").read()
      chosen = os.environ.get(host_allocator.CHOSEN_ENV, "")
      print(repr(os.environ.get("LD_PRELOAD", "")), chosen, bool(chosen) and chosen in maps,
            sys.argv[1:])
  """))
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", ha.CHOSEN_ENV)}
  env.update(env_overrides, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
  out = subprocess.run([sys.executable, "-m", "probe", "--flag=1"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  return out.stdout.split()


@pytest.mark.skipif(not os.path.isfile(STAND_IN), reason="needs x86-64 Debian's libm path")
def test_the_reexecuted_process_has_the_library_mapped_and_keeps_its_arguments(tmp_path):
  preload, chosen, mapped, *args = _run_probe(tmp_path, {ha.ENV: STAND_IN})
  assert (preload, chosen, mapped) == (repr(STAND_IN), STAND_IN, "True")
  assert args == ["['--flag=1']"]
  assert _run_probe(tmp_path, {ha.ENV: "system"})[:1] == ["''"]


@pytest.mark.skipif(ha.find_tcmalloc() is None, reason="tcmalloc is not installed")
def test_auto_maps_the_installed_tcmalloc(tmp_path):
  _, chosen, mapped, *_ = _run_probe(tmp_path, {ha.ENV: "auto"})
  assert (chosen, mapped) == (ha.find_tcmalloc(), "True")


def test_main_names_a_missing_allocator_library_in_one_line():
  env = dict(os.environ, **{ha.ENV: "/no/such/libtcmalloc.so"})
  env.pop(ha.CHOSEN_ENV, None)
  out = subprocess.run([sys.executable, "-m", "irl_lm.main", "--gin_file=gin/iqlearn_tiny.gin"],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      f"error: {ha.ENV}='/no/such/libtcmalloc.so' is neither 'auto', 'system' nor an existing "
      "library file; set it to one of those (e.g. "
      "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4) or unset it."]
