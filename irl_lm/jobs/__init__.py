"""Jobs the command line runs (``run.mode``): train, infer, evaluate, convert, check.

Jobs import libraries (models, data, checkpoints, decoding, training, evaluation) and the small
shared module :mod:`irl_lm.jobs.common`; they never import each other.
"""
