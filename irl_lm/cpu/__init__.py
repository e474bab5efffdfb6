"""What irl_lm does only when it runs on a CPU.

* `irl_lm.cpu.xla`: rewrites of a few jax / flax primitives that XLA's CPU backend compiles
  into faster code or less memory; each computes what the primitive computes and applies only
  while jax's default backend is the CPU (elsewhere the primitive itself runs).
* `irl_lm.cpu.host_allocator`: the command-line job re-executes itself with tcmalloc preloaded
  when jax will run on the CPU.

docs/performance.md gives each one's measured effect and the command that measures it
(`python -m benchmarks cpu`, `python -m benchmarks host_allocator`). This package imports
nothing at import time, so `host_allocator` can run before jax is loaded.
"""
