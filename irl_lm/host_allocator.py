"""The host's memory allocator: tcmalloc instead of glibc's malloc for the command-line job.

Why: XLA on CPU allocates a step's temporaries (4.3 GB for T5 1.1 small, batch 8, 512 / 128)
as one block per execution, and YNNPACK's fusions take 48 MB scratch blocks. glibc's malloc
serves blocks of that size with fresh mmap()s from the runtime's worker threads and unmaps them
when they are freed, so every step page-faults its whole working set again: 1.3 million minor
faults and about 3.5 s of kernel time per 10 s step on a 2-core CPU. tcmalloc keeps freed
pages for reuse (no faults after the first step); `benchmarks/host_allocator.py` measures the
step under each allocator in separate processes.

An allocator can only be chosen when a process starts, so `irl_lm.main` re-executes itself once
with tcmalloc in LD_PRELOAD when the library is installed (Debian / Ubuntu:
``apt-get install libtcmalloc-minimal4``) and not already loaded. The environment variable
``IRL_LM_HOST_ALLOCATOR`` decides: unset or ``auto`` (the default: tcmalloc when found),
``system`` (keep the allocator the process has), or the path of an allocator library to preload.
Nothing else in the package depends on it; on machines without tcmalloc everything runs as is.
"""
from __future__ import annotations

import os
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


def preload_environment(environ: Mapping[str, str],
                        candidates: Sequence[str] = TCMALLOC_CANDIDATES) -> dict[str, str] | None:
  """The environment to re-execute with, or None to keep the current process as it is.

  None when: `ENV` is 'system', the process was already re-executed (`CHOSEN_ENV`), LD_PRELOAD
  already names an allocator, or (for 'auto') no tcmalloc is installed.

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
    library = find_tcmalloc(candidates)
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
