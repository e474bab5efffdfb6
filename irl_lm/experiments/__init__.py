"""Experiments: sweeps of runs (in this process, or subprocesses of `python -m irl_lm.main`),
tidy result CSVs with mean ± SEM over seeds, and the paper's figures and tables.

  python -m irl_lm.experiments --sweep=gin/experiments/quick_cpu.gin --out_dir=results/docstring

Modules: `sweeps` (the gin ``Sweep``, expansion to runs, resumable execution, commands),
`inprocess` (every phase in one process, as `irl_lm.main` runs it: gin's `run` after
`irl_lm.config.parse`; jax's persistent compilation cache), `results` (CSV rows, curves,
`aggregate`), `figures` (PNG + CSV per item), `timing` (sampling vs update time of the tiny
model). Runs are driven through gin's `run` entry point and read back from their files; the
package imports no job internals.
"""
