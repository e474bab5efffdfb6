"""Fixtures of the data tests."""
import pytest

from irl_lm.data import registry
from irl_lm.data import stdlib_docstrings as sd


@pytest.fixture()
def temp_task_names():
  """Task names registered by a test; removed from seqio and the registry afterwards."""
  names = []
  yield names
  for name in names:
    registry.forget(name)


@pytest.fixture(scope="session")
def stdlib_cache(tmp_path_factory):
  """A temporary cache of the built-in task, extracted once for the whole session."""
  path = str(tmp_path_factory.mktemp("irl_lm_cache"))
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(sd.CACHE_ENV_VAR, path)
    yield path
