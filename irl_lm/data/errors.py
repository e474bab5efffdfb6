"""Errors of the data package (no heavy imports, so every loader module can raise them)."""


class MissingDatasetError(FileNotFoundError):
  """A task's data set is not on this machine; the message says what to download and where."""
