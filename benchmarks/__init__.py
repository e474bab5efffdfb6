"""irl_lm's benchmarks: `python -m benchmarks CASE [flags]` from the checkout's root.

Each case is a module of this package with `main(argv) -> exit status`; `python -m benchmarks`
lists them and `python -m benchmarks CASE --help` gives a case's flags. They share
`benchmarks.common` (shapes, synthetic batches, the jitted T5 train step, interleaved timing).
Nothing in irl_lm imports from here. docs/performance.md holds the figures, each with its
command, date and processor.
"""
