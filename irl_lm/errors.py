"""The user-error rule: an exception a user causes by a file, a flag or a binding.

A `UserError`'s message is one sentence naming the thing (file and line, binding, flag) and the
fix; the command-line entry points print it as one `error: ...` line and exit 2. Everything
else is a bug and keeps its traceback. Imports nothing of irl_lm, so every layer may raise it.
"""
from __future__ import annotations

import difflib
from typing import Iterable

EXIT_USER_ERROR = 2


class UserError(Exception):
  """Something the user can fix (a file, a flag, a binding); `str(e)` is the one line to print."""


def closest(name: str, valid: Iterable[str]) -> str:
  """' (did you mean 'x'?)' for the valid name closest to `name`, or '' when none is close."""
  match = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=0.6)
  return f" (did you mean '{match[0]}'?)" if match else ""


class SettingError(UserError, ValueError):
  """A setting (a gin binding) whose value cannot work; the message names the binding."""
