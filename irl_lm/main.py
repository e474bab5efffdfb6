r"""Command-line entry point: `python -m irl_lm.main --gin_file=gin/iqlearn_tiny.gin`.

Flags:
  --gin_file      gin file(s), repeatable; found as given or under the shipped gin/ (the
                  checkout's, or the copy a non-editable install puts in irl_lm/gin_files);
                  a file's `include`s are also looked for next to it.
  --gin_bindings  extra bindings, repeatable, e.g. --gin_bindings="IQLearn.td_weight = 0.0".
  --distributed   initialise multi-host JAX (every worker of a TPU pod runs the same command).
  -v / --verbosity  absl's flag. Default here: warnings and errors only, plus what irl_lm prints
                  for the user (progress lines, evaluation results, the run summary). `-v 0`
                  brings back INFO logs (irl_lm's, Orbax's, TensorFlow's, ...).

What runs is `run(mode=...)`, configured in gin: `run.mode = 'train'` (default).
Without `run.run_dir`, outputs go to `runs/<first gin file's name>-<hash of the config>`, so a
changed configuration never resumes (or overwrites) another configuration's checkpoints.

Exit status: 0 done (also `--help`); 2 a user error: a gin file, binding, flag or data file that
cannot be used (one line, `error: ...`, naming it and the fix; no flags at all prints a two-line
usage); 143 preempted by
SIGTERM after saving a checkpoint at the current step (rerun the same command to resume); 130
interrupted by Ctrl-C (the same, or killed at once by a second Ctrl-C); 3 stopped at a step
whose loss, gradients or updated state were not finite (the line names the step and the last
good checkpoint).

Host allocator: on Linux, when jax will run on the CPU, the job re-executes itself once with
tcmalloc preloaded when it is installed (`apt-get install libtcmalloc-minimal4`);
IRL_LM_HOST_ALLOCATOR=system keeps the system allocator (irl_lm/cpu/host_allocator.py).

Quiet console: with the seqio extra installed, TensorFlow 2.21, absl's C++ logging and
SentencePiece (inside tensorflow-text) write INFO lines straight to file descriptor 2, before
any log level applies (TF_CPP_MIN_LOG_LEVEL does not reach them). Unless `-v 0` is given or
TensorFlow is not installed, stderr therefore passes through a small filter process that drops
lines in absl's INFO format and nothing else.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import subprocess
import sys
from typing import Sequence

from absl import app, flags

from irl_lm import errors

FLAGS = flags.DEFINE_multi_string("gin_file", [], "Gin file(s) to parse, in order.")
BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings applied after files.")
DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() first (multi-host TPU pods; launch/run.sh sets it).")

ABSL_WARNING = -1
# Lines of native INFO chatter: absl/glog format ("I1201 22:12:03.824830  1234 file.cc:12] ",
# before absl's initialisation "I0000 00:00:1796163805.529053  1234 port.cc:153] "), its
# pre-initialisation notice, SentencePiece's "normalizer.cc(51) LOG(INFO) ...", TF's older
# "2026-12-01 22:12:03.824830: I tensorflow/..." format, and the CUDA probe error TensorFlow
# prints on machines without a GPU ("E... cuda_platform.cc:52] failed call to cuInit").
NATIVE_INFO = (rb"^(I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
               rb"|E\d{4} \d\d:\d\d:\d+\.\d+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit:"
               rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
               rb"|\S+\.cc\(\d+\) LOG\(INFO\) "
               rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: I )")

_FILTER = f"""
import re, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
  signal.signal(s, signal.SIG_IGN)  # ends at EOF, i.e. when every writer is gone
drop = re.compile({NATIVE_INFO!r})
out = sys.stdout.buffer
for line in sys.stdin.buffer:
  if not drop.match(line):
    out.write(line)
    out.flush()
"""


USAGE = ("usage: python -m irl_lm.main --gin_file=FILE [--gin_file=...] "
         "[--gin_bindings='NAME.PARAM = VALUE' ...]\n"
         "e.g. python -m irl_lm.main --gin_file=gin/iqlearn_tiny.gin (--help lists every flag)")


def _parse_flags(argv: Sequence[str]) -> list[str]:
  """The CLI conventions (`errors.flags_parser`), and an unset --verbosity means WARNING
  (absl's app.run would make it INFO)."""
  rest = errors.flags_parser("python -m irl_lm.main", __doc__, __name__)(argv)
  if flags.FLAGS["verbosity"].using_default_value:
    flags.FLAGS.verbosity = ABSL_WARNING
  return rest


def quiet_native_logs() -> None:
  """Routes fd 2 through the NATIVE_INFO filter when TensorFlow is installed (see the module
  docstring); without it nothing writes such lines and stderr stays as it is."""
  if importlib.util.find_spec("tensorflow") is None:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  try:
    original = os.dup(2)
    read, write = os.pipe()
    proc = subprocess.Popen([sys.executable, "-S", "-c", _FILTER], stdin=read, stdout=original)
  except OSError:
    return  # unfiltered, but working
  sys.stderr.flush()
  os.dup2(write, 2)
  os.close(write)
  os.close(read)

  def restore() -> None:  # let the filter drain before the shell prints its prompt
    try:
      sys.stderr.flush()
    except (OSError, ValueError):
      pass
    os.dup2(original, 2)
    try:
      proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
      pass

  atexit.register(restore)


def _sentence(e: BaseException) -> str:
  # gin appends "In call to configurable ..." lines; the first part is the sentence.
  return str(e).split("\n  In call to configurable")[0]


def execute(gin_files: Sequence[str], bindings: Sequence[str] = (), *,
            distributed: bool = False) -> int:
  """Parses the gin files and bindings and runs `run` (what `main` does after its flags).

  Returns:
    The exit status; 2 after printing a user error (`errors.UserError`) as one `error:` line.
    Any other exception is a bug and propagates with its traceback.
  """
  import gin
  from irl_lm import config
  from irl_lm.training import stopping
  if distributed:
    import jax
    jax.distributed.initialize()  # TPU VMs discover the coordinator themselves.
  try:
    config.parse(gin_files, bindings)
    gin.get_configurable("run")(default_name=os.path.splitext(os.path.basename(gin_files[0]))[0])
  except errors.UserError as e:  # a file, flag or binding: one sentence, no traceback
    print(f"error: {_sentence(e)}", file=sys.stderr)
    return errors.EXIT_USER_ERROR
  except stopping.NonFiniteError as e:
    print(f"error: {_sentence(e)}", file=sys.stderr)
    return e.exit_code
  except stopping.TrainingStopped as e:  # preempted or interrupted, after a checkpoint
    print(_sentence(e), file=sys.stderr)
    return e.exit_code
  except KeyboardInterrupt:
    print("interrupted (Ctrl-C) outside the training loop; the checkpoints saved so far are "
          "kept: rerun the same command to resume.", file=sys.stderr)
    return stopping.EXIT_INTERRUPTED
  return 0


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    errors.exit_with(f"unexpected argument(s) {' '.join(argv[1:])}: pass gin files with "
                     "--gin_file and settings with --gin_bindings (python -m irl_lm.main "
                     "--help).")
  if not FLAGS.value:
    print(USAGE, file=sys.stderr)
    sys.exit(errors.EXIT_USER_ERROR)
  if flags.FLAGS.verbosity < 0:
    quiet_native_logs()
  status = execute(FLAGS.value, BINDINGS.value, distributed=DISTRIBUTED.value)
  if status:
    sys.exit(status)


def _choose_host_allocator() -> None:
  """Re-executes with tcmalloc when installed (irl_lm/cpu/host_allocator.py says why)."""
  from irl_lm.cpu import host_allocator
  try:
    host_allocator.reexec_with_allocator("irl_lm.main", sys.argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  _choose_host_allocator()
  app.run(main, flags_parser=_parse_flags)
