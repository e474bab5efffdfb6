r"""Command-line entry point: `python -m irl_lm.main --gin_file=gin/iqlearn_tiny.gin`.

Flags:
  --gin_file      gin file(s), repeatable; found as given or under the repository's gin/.
  --gin_bindings  extra bindings, repeatable, e.g. --gin_bindings="IQLearn.td_weight = 0.0".
  --distributed   initialise multi-host JAX (every worker of a TPU pod runs the same command).

What runs is `run(mode=...)`, configured in gin: `run.mode = 'train'` (default).
Without `run.run_dir`, outputs go to `runs/<first gin file's name>-<hash of the config>`, so a
changed configuration never resumes (or overwrites) another configuration's checkpoints.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from absl import app, flags

FLAGS = flags.DEFINE_multi_string("gin_file", [], "Gin file(s) to parse, in order.")
BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings applied after files.")
DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() first (multi-host TPU pods; launch/run.sh sets it).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}; use --gin_file and "
                         "--gin_bindings.")
  import gin
  from irl_lm import config
  if not FLAGS.value:
    raise app.UsageError("no --gin_file given: try --gin_file=gin/iqlearn_tiny.gin")
  if DISTRIBUTED.value:
    import jax
    jax.distributed.initialize()  # TPU VMs discover the coordinator themselves.
  try:
    config.parse(FLAGS.value, BINDINGS.value)
    gin.get_configurable("run")(default_name=os.path.splitext(os.path.basename(FLAGS.value[0]))[0])
  except config.USER_ERRORS as e:  # Known user errors: one clear sentence, no traceback.
    # gin appends "In call to configurable ..." lines; the first part is the sentence.
    print(f"error: {str(e).split(chr(10) + '  In call to configurable')[0]}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
