"""Storage failures in a phrase: what an OS or TensorStore error means.

Orbax writes through TensorStore, whose errors are `ValueError`s with a long spec dump and the
OS error as `[os_error_code='28']`; Python's own are `OSError`s. `reason` turns either into a
short phrase ("the disk is full (ENOSPC)") for the checkpointer's and the run lock's messages.
"""
from __future__ import annotations

import errno
import os
import re
from typing import Optional

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "a file exceeds the file-size limit (ulimit -f)",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EEXIST: "a part of the path is a file, not a directory",
    errno.EIO: "an input/output error of the storage device",
}
_OS_CODE = re.compile(r"os_error_code='?(\d+)")
_CUT = re.compile(r"\s*(See full TensorStore details|\[source locations=|\{).*", re.S)


def error_number(error: BaseException) -> Optional[int]:
  """The errno behind `error` or its causes (OSError, or TensorStore's os_error_code)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno:
      return error.errno
    match = _OS_CODE.search(str(error))
    if match:
      return int(match.group(1))
    error = error.__cause__ or error.__context__
  return None


def summary(error: BaseException, limit: int = 300) -> str:
  """`Type: first line` of the root cause of `error` (the outer errors of Orbax say only "error
  while reading"), without TensorStore's spec dump, at most `limit` characters."""
  seen = {id(error)}
  while (error.__cause__ or error.__context__) is not None and id(
      error.__cause__ or error.__context__) not in seen:
    error = error.__cause__ or error.__context__
    seen.add(id(error))
  text = _CUT.sub("", str(error).strip().split("\n")[0]) or type(error).__name__
  text = text if len(text) <= limit else text[:limit - 3] + "..."
  return f"{type(error).__name__}: {text}"


def reason(error: BaseException) -> str:
  """'the disk is full (ENOSPC)', or the error's summary when no errno is known."""
  number = error_number(error)
  if number in _REASONS:
    return f"{_REASONS[number]} ({errno.errorcode[number]})"
  if number is not None:
    return f"{os.strerror(number)} ({errno.errorcode.get(number, number)})"
  return summary(error)
