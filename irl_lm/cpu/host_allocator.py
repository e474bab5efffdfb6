"""The host's memory allocator: tcmalloc instead of glibc's malloc when jax runs on the CPU.

XLA on CPU allocates a step's temporaries (gigabytes for T5 1.1 small) as one block per
execution. glibc's malloc serves blocks of that size with fresh mmap()s and unmaps them when
they are freed, so every step page-faults its whole working set again; tcmalloc keeps freed
pages for reuse. docs/performance.md gives the measured effect (`python -m benchmarks
host_allocator`).

An allocator can only be chosen when a process starts, so `irl_lm.main` (and
`irl_lm.experiments`) re-execute themselves once with tcmalloc in LD_PRELOAD when the library is
installed (Debian / Ubuntu: ``apt-get install libtcmalloc-minimal4``), not already loaded, and
jax will run on the CPU (`jax_runs_on_cpu`: JAX_PLATFORMS names the CPU first, or it is unset
and no GPU or TPU plugin of jax is installed). The environment variable
``IRL_LM_HOST_ALLOCATOR`` decides: unset or ``auto`` (the default: tcmalloc when found and on
the CPU), ``system`` (keep the allocator the process has), or the path of an allocator library
to preload (whatever the backend). Without tcmalloc everything runs as is.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from typing import Mapping, Sequence

ENV = "IRL_LM_HOST_ALLOCATOR"
# Set in the re-executed process (to the library chosen), so it never re-executes again.
CHOSEN_ENV = "IRL_LM_HOST_ALLOCATOR_CHOSEN"
# Where Debian / Ubuntu / Fedora packages put tcmalloc (the full and the minimal library).
TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc.so.4",
)
# tcmalloc reports every allocation above 1 GiB on stderr by default, i.e. a line per step here.
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}
_PRELOADED_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def find_tcmalloc(candidates: Sequence[str] = TCMALLOC_CANDIDATES) -> str | None:
  """The first installed tcmalloc library among `candidates`, or None."""
  return next((path for path in candidates if os.path.isfile(path)), None)


def jax_runs_on_cpu(environ: Mapping[str, str]) -> bool:
  """Whether jax, started with `environ`, will compute on the CPU (without importing jax):
  JAX_PLATFORMS (or JAX_PLATFORM_NAME) names 'cpu' first, or neither is set and no accelerator
  plugin is installed (libtpu, or a module or entry point of jax's `jax_plugins` group)."""
  platforms = environ.get("JAX_PLATFORMS") or environ.get("JAX_PLATFORM_NAME")
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  if importlib.util.find_spec("libtpu") is not None:
    return False
  if importlib.metadata.entry_points(group="jax_plugins"):
    return False
  namespace = importlib.util.find_spec("jax_plugins")
  locations = namespace.submodule_search_locations if namespace else None
  return not any(True for _ in pkgutil.iter_modules(locations or []))


def preload_environment(environ: Mapping[str, str],
                        candidates: Sequence[str] = TCMALLOC_CANDIDATES) -> dict[str, str] | None:
  """The environment to re-execute with, or None to keep the current process as it is.

  None when: `ENV` is 'system', the process was already re-executed (`CHOSEN_ENV`), LD_PRELOAD
  already names an allocator, or (for 'auto') no tcmalloc is installed or jax will not run on
  the CPU.

  Raises:
    ValueError: `ENV` names a library that does not exist.
  """
  choice = environ.get(ENV, "auto") or "auto"
  if choice == "system" or environ.get(CHOSEN_ENV):
    return None
  preload = [p for p in environ.get("LD_PRELOAD", "").replace(":", " ").split() if p]
  if any(name in os.path.basename(p) for p in preload for name in _PRELOADED_ALLOCATORS):
    return None
  if choice == "auto":
    library = find_tcmalloc(candidates) if jax_runs_on_cpu(environ) else None
    if library is None:
      return None
  elif os.path.isfile(choice):
    library = choice
  else:
    raise ValueError(f"{ENV}={choice!r} is neither 'auto', 'system' nor an existing library "
                     "file; set it to one of those (e.g. "
                     "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4) or unset it.")
  env = dict(environ)
  for key, value in QUIET.items():
    env.setdefault(key, value)
  env["LD_PRELOAD"] = " ".join([library] + preload)
  env[CHOSEN_ENV] = library
  return env


def reexec_with_allocator(module: str, argv: Sequence[str]) -> None:
  """Replaces this process by `python -m module argv[1:]` with the allocator preloaded, when
  `preload_environment` says so (Linux only); otherwise returns and changes nothing."""
  if not sys.platform.startswith("linux"):
    return
  env = preload_environment(os.environ)
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, "-m", module, *argv[1:]], env)
