"""`python -m benchmarks CASE [flags]`: runs one benchmark (`python -m benchmarks` lists them)."""
from __future__ import annotations

import importlib
import os
import sys

# case -> (module of this package, what it measures)
CASES = {
    "step_time": ("step_time", "every method's train step time as a ratio to MLE (T5)"),
    "decode": ("decode", "cached sampling vs one update vs decoding without a cache"),
    "memory": ("memory", "XLA's memory and step time per remat_policy and microbatch count"),
    "vs_transformers": ("vs_transformers", "T5 1.1 against transformers (PyTorch): train step, "
                        "sampling, peak memory"),
    "roofline": ("roofline", "FLOPs and bytes against the machine's measured rates"),
    "scaling": ("scaling", "step and sampling time vs batch, lengths and model size"),
    "decoder_only": ("decoder_only", "the decoder-only model's step and sampling next to T5's"),
    "sweep_runner": ("sweep_runner", "a small sweep in subprocesses vs in one process"),
    "host_allocator": ("host_allocator", "the train step under glibc's malloc, tcmalloc, "
                       "jemalloc"),
    "cpu": ("cpu", "each CPU rewrite (irl_lm/cpu/xla.py) against jax's primitive"),
    "op_profile": ("op_profile", "where a train step's (or sampling call's) time goes, per XLA "
                   "operation"),
}
# A case whose module is not in every checkout: listed only when its file is present.
OPTIONAL_CASES = {
    "accelerator": ("accelerator", "a check of the train step and sampling on a GPU or TPU"),
}


def available() -> dict[str, tuple[str, str]]:
  here = os.path.dirname(os.path.abspath(__file__))
  return {**CASES, **{name: entry for name, entry in OPTIONAL_CASES.items()
                      if os.path.isfile(os.path.join(here, entry[0] + ".py"))}}


def usage() -> str:
  cases = available()
  width = max(map(len, cases))
  return ("usage: python -m benchmarks CASE [flags]   (python -m benchmarks CASE --help)\n\n" +
          "\n".join(f"  {name:{width}}  {about}" for name, (_, about) in cases.items()))


def main(argv: list[str]) -> int:
  if not argv or argv[0] in ("-h", "--help"):
    print(usage())
    return 0 if argv else 2
  cases = available()
  if argv[0] not in cases:
    print(f"error: unknown benchmark {argv[0]!r}; choose one of {', '.join(cases)}.",
          file=sys.stderr)
    return 2
  module = importlib.import_module(f"benchmarks.{cases[argv[0]][0]}")
  return module.main(argv[1:]) or 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
