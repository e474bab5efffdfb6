"""The user-error rule: an exception a user causes by a file, a flag or a binding.

A `UserError`'s message is one sentence naming the thing (file and line, binding, flag) and the
fix; the command-line entry points print it as one `error: ...` line and exit 2. Everything
else is a bug and keeps its traceback. Imports nothing of irl_lm, so every layer may raise it.
"""
from __future__ import annotations

import difflib
import sys
from typing import Callable, Iterable, NoReturn, Optional, Sequence

EXIT_USER_ERROR = 2
HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "--helpfull", "-?")


class UserError(Exception):
  """Something the user can fix (a file, a flag, a binding); `str(e)` is the one line to print."""

  # TensorFlow's autograph re-raises an error from inside a tf.function (e.g. a tokenizer
  # loaded by a tf.data map) as its own type only when that type's __init__ is Exception's;
  # subclasses that also derive from ValueError etc. would otherwise become a StagingError.
  __init__ = Exception.__init__


def closest_name(name: str, valid: Iterable[str]) -> Optional[str]:
  """The valid name closest to `name` (difflib's ratio >= 0.6), or None."""
  match = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
  return match[0] if match else None


def closest(name: str, valid: Iterable[str]) -> str:
  """' (did you mean 'x'?)' for the valid name closest to `name`, or '' when none is close."""
  match = closest_name(name, valid)
  return f" (did you mean '{match}'?)" if match else ""


class SettingError(UserError, ValueError):
  """A setting (a gin binding) whose value cannot work; the message names the binding."""


def exit_with(message: str) -> NoReturn:
  """Prints `error: message` (one line) to stderr and exits 2."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(EXIT_USER_ERROR)


def flags_parser(command: str, doc: str, module_name: str
                 ) -> Callable[[Sequence[str]], list[str]]:
  """absl's flag parsing for `app.run(main, flags_parser=...)` with the CLI conventions:
  `--help` prints `doc` and the module's flags and exits 0; a flag error (unknown flag, bad
  value) is one `error:` line and exit 2 (absl: "FATAL Flags parsing error", exit 1)."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  def parse(argv: Sequence[str]) -> list[str]:
    if any(arg in HELP_FLAGS for arg in argv[1:]):
      print(doc)
      print(flags.FLAGS.module_help(sys.modules[module_name]))
      sys.exit(0)
    try:
      return flags.FLAGS(list(argv))
    except flags.Error as e:
      exit_with(f"{e} ({command} --help lists the flags).")

  return parse
