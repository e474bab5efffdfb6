"""Experiments: sweeps of runs (subprocesses of `python -m irl_lm.main`), tidy result CSVs with
mean ± SEM over seeds, and the paper's figures and tables.

  python -m irl_lm.experiments --sweep=gin/experiments/quick_cpu.gin --out_dir=results/quick

Modules: `sweeps` (the gin ``Sweep``, expansion to runs, resumable execution, commands),
`results` (CSV rows, curves, `aggregate`), `figures` (PNG + CSV per item), `timing` (sampling vs
update time of the tiny model). This package drives runs through subprocesses and reads their
files; it imports no job or runner internals.
"""
