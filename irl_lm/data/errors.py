"""Errors of the data package (no heavy imports, so every loader module can raise them)."""
from irl_lm import errors


class MissingDatasetError(errors.UserError, FileNotFoundError):
  """A task's data set is not on this machine; the message says what to download and where."""


class DataError(errors.UserError, ValueError):
  """A data file or a data setting that cannot be used; the message names the file, the line
  and the fix."""
