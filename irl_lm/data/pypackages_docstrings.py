"""Pretraining data: installed third-party packages' functions -> docstring summaries.

The same code -> first-docstring-sentence examples as :mod:`irl_lm.data.stdlib_docstrings`
(extracted with its :func:`~irl_lm.data.stdlib_docstrings.extract_file`), but from the
third-party packages irl_lm itself requires with its ``seqio`` extra (:data:`PACKAGES`, at the
versions ``constraints/py311.txt`` pins), so every machine that runs the protocol has them and
nothing is downloaded. It is the pretraining corpus of the CPU
protocol (``gin/pretrain_tiny.gin``) and is disjoint from the fine-tuning task
``stdlib_docstrings``:

* packages are located with ``importlib.util.find_spec`` (which imports nothing for a top-level
  name); a package inside the standard library, and any file under the standard-library root
  that is not in a ``site-packages`` / ``dist-packages`` directory, is never read;
* test files (``test_*.py``, ``*_test.py``, ``tests/`` ...) are skipped;
* an example whose qualified name or code occurs in any split of ``stdlib_docstrings`` is
  dropped, as are repeated names and codes (first occurrence kept, packages in list order,
  files sorted by path).

The split (train/validation, 98/2) is the SHA-256 of the qualified name
(:func:`~irl_lm.data.stdlib_docstrings.split_for_name`). The examples are cached as JSON lines
under ``$IRL_LM_CACHE_DIR`` (default ``~/.cache/irl_lm``), keyed by the extractor version, the
Python version, the package versions and locations, and the standard library it is disjoint
from; the first call extracts them (about 20 s).

Task ``pypackages_docstrings`` (metric family ``rouge``): ``code`` -> inputs, ``summary`` ->
targets (``name`` kept as metadata), the shipped vocabulary
:func:`vocabularies.stdlib_vocabulary`; gin: ``train.task = @pypackages_docstrings_task()``,
with ``train_examples = N`` for a fixed subset. This module is pure Python: :func:`register`
imports seqio (and TensorFlow) when called.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

from irl_lm.data import spec
from irl_lm.data import stdlib_docstrings as sd

if TYPE_CHECKING:  # pragma: no cover
  import seqio

TASK = "pypackages_docstrings"
FIELDS = sd.FIELDS

# Bump when the package selection rules change (the stdlib extractor has its own version).
VERSION = 1

SPLITS: tuple[str, ...] = ("train", "validation")
_SPLIT_PERCENT = (("train", 98), ("validation", 100))

# (import name, distribution name), in extraction order.
PACKAGES: tuple[tuple[str, str], ...] = (
    ("numpy", "numpy"),
    ("scipy", "scipy"),
    ("jax", "jax"),
    ("flax", "flax"),
    ("optax", "optax"),
    ("orbax", "orbax-checkpoint"),
    ("seqio", "seqio"),
    ("clu", "clu"),
    ("absl", "absl-py"),
    ("gin", "gin-config"),
    ("sacrebleu", "sacrebleu"),
    ("rouge_score", "rouge-score"),
    ("tensorflow", "tensorflow"),
    ("tensorflow_text", "tensorflow-text"),
    ("tensorflow_datasets", "tensorflow-datasets"),
    ("tensorboard", "tensorboard"),
)
"""The packages read by default: irl_lm's requirements (``seqio`` extra included) with Python
sources worth reading (jaxlib, sentencepiece and safetensors are mostly compiled code)."""

_NON_STDLIB_DIRS = frozenset({"site-packages", "dist-packages"})


def split_for_name(qualified_name: str) -> str:
  """``'train'`` for 98 % of qualified names, ``'validation'`` for 2 % (stable SHA-256)."""
  return sd.split_for_name(qualified_name, _SPLIT_PERCENT)


def is_stdlib_file(path: str, stdlib_root: Optional[str] = None) -> bool:
  """Whether `path` belongs to the standard library: under its root and not in an installed
  packages directory (a system Python keeps ``site-packages`` inside the library root)."""
  root = os.path.realpath(stdlib_root or sd.default_stdlib_root())
  rel = os.path.relpath(os.path.realpath(path), root)
  if rel == os.pardir or rel.startswith(os.pardir + os.sep):
    return False
  return not _NON_STDLIB_DIRS.intersection(rel.split(os.sep))


def _names(packages: Optional[Sequence[str]]) -> tuple[str, ...]:
  return tuple(packages) if packages is not None else tuple(p for p, _ in PACKAGES)


def package_dirs(packages: Optional[Sequence[str]] = None, stdlib_root: Optional[str] = None
                 ) -> list[tuple[str, str]]:
  """Locates the packages without importing them.

  Args:
    packages: top-level import names; default those of :data:`PACKAGES`.
    stdlib_root: the standard library to stay out of; default the running interpreter's.

  Returns:
    ``[(name, directory)]`` in `packages` order (a namespace package: its first directory).

  Raises:
    ValueError: a package is not installed, is not a package directory, or is part of the
      standard library.
  """
  found = []
  for name in _names(packages):
    found_spec = importlib.util.find_spec(name)
    locations = list(found_spec.submodule_search_locations or []) if found_spec else []
    if not locations:
      raise ValueError(f"pypackages_docstrings: {name!r} is not an installed package "
                       "directory; install irl_lm with its seqio extra "
                       "(pip install 'irl_lm[seqio]') or pass `packages` without it.")
    directory = os.path.abspath(locations[0])
    if is_stdlib_file(os.path.join(directory, "__init__.py"), stdlib_root):
      raise ValueError(f"pypackages_docstrings: {name!r} ({directory}) is part of the standard "
                       "library, which is the fine-tuning task stdlib_docstrings.")
    found.append((name, directory))
  return found


def iter_package_files(packages: Optional[Sequence[str]] = None,
                       stdlib_root: Optional[str] = None) -> Iterator[tuple[str, str]]:
  """Yields ``(path, module name)`` of every non-test, non-stdlib .py file of the packages."""
  for _, directory in package_dirs(packages, stdlib_root):
    parent = os.path.dirname(directory)
    for path in sd.iter_python_files(directory):
      if path.endswith("_test.py") or is_stdlib_file(path, stdlib_root):
        continue
      yield path, sd.module_name(parent, path)


def extract_examples(packages: Optional[Sequence[str]] = None, *,
                     cache_dir: Optional[str] = None,
                     stdlib_root: Optional[str] = None) -> list[dict[str, str]]:
  """Extracts the whole data set (no caching of its own; the stdlib task's cache is used).

  Args:
    packages: top-level import names; default those of :data:`PACKAGES`.
    cache_dir: cache root of the stdlib examples to exclude; default
      :func:`~irl_lm.data.stdlib_docstrings.default_cache_dir`.
    stdlib_root: the standard library; default the running interpreter's.

  Returns:
    Deterministically ordered dicts with keys ``name``, ``code``, ``summary`` and ``split``;
    names and codes are unique and none occurs in ``stdlib_docstrings``.
  """
  stdlib = [ex for split in sd.SPLITS
            for ex in sd.load_examples(split, cache_dir=cache_dir, stdlib_root=stdlib_root)]
  examples = (example for path, module in iter_package_files(packages, stdlib_root)
              for example in sd.extract_file(path, module))
  return sd.unique_examples(examples, split_for_name,
                            exclude_names=frozenset(ex["name"] for ex in stdlib),
                            exclude_codes=frozenset(ex["code"] for ex in stdlib))


def cache_paths(packages: Optional[Sequence[str]] = None, *, cache_dir: Optional[str] = None,
                stdlib_root: Optional[str] = None) -> dict[str, str]:
  """Returns the JSONL path of each split's cache file (they may not exist yet).

  The directory is keyed by both extractor versions, the Python version, and a hash of the
  package names, versions and directories and of the standard-library root.
  """
  parts = [os.path.abspath(stdlib_root or sd.default_stdlib_root())]
  distributions = dict(PACKAGES)
  for name, directory in package_dirs(packages, stdlib_root):
    try:
      version = importlib.metadata.version(distributions.get(name, name))
    except importlib.metadata.PackageNotFoundError:
      version = "?"
    parts.append(f"{name}={version}@{directory}")
  digest = hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:12]
  py = ".".join(str(v) for v in sys.version_info[:3])
  key = f"v{sd.EXTRACTOR_VERSION}.{VERSION}-py{py}-{digest}"
  directory = os.path.join(cache_dir or sd.default_cache_dir(), TASK, key)
  return {split: os.path.join(directory, f"{split}.jsonl") for split in SPLITS}


def load_examples(split: str, *, packages: Optional[Sequence[str]] = None,
                  cache_dir: Optional[str] = None,
                  stdlib_root: Optional[str] = None) -> list[dict[str, str]]:
  """Returns one split's examples, extracting and caching them on first use.

  Args:
    split: one of :data:`SPLITS`.
    packages: top-level import names; default those of :data:`PACKAGES`.
    cache_dir: cache root; default :func:`~irl_lm.data.stdlib_docstrings.default_cache_dir`.
    stdlib_root: the standard library to stay disjoint from; default the running one.

  Returns:
    Dicts with keys ``name``, ``code``, ``summary`` in the deterministic data-set order.
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r} for {TASK}; use one of {SPLITS}.")
  paths = sd.fill_cache(
      cache_paths(packages, cache_dir=cache_dir, stdlib_root=stdlib_root),
      lambda: extract_examples(packages, cache_dir=cache_dir, stdlib_root=stdlib_root))
  return sd.read_cache(paths[split])


def register(name: str = TASK, *, packages: Optional[Sequence[str]] = None,
             cache_dir: Optional[str] = None, stdlib_root: Optional[str] = None,
             vocabulary_path: Optional[str] = None, train_examples: Optional[int] = None,
             replace: bool = False) -> "seqio.Task":
  """Registers the third-party-packages code -> summary task (unless `name` is registered).

  Args:
    name: task name.
    packages: top-level import names (default :data:`PACKAGES`).
    cache_dir: JSONL cache root (default: read from ``$IRL_LM_CACHE_DIR`` at load time).
    stdlib_root: the standard library to stay disjoint from (default: the running one).
    vocabulary_path: SentencePiece model for inputs and targets (default: the shipped one).
    train_examples: keep a fixed subset of this many train examples (None: all).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task``; nothing is located, read or extracted until a dataset is
    requested.
  """
  packages = spec.as_tuple(packages)
  return sd.add_docstring_task(
      name, lambda split: load_examples(split, packages=packages, cache_dir=cache_dir,
                                        stdlib_root=stdlib_root),
      vocabulary_path=vocabulary_path, train_examples=train_examples, replace=replace,
      splits=SPLITS, metric=SPEC.metric)


SPEC = spec.TaskSpec(name=TASK, metric="rouge", register=register)


def pypackages_docstrings_task(name: str = TASK, packages: Optional[Sequence[str]] = None,
                               cache_dir: Optional[str] = None,
                               stdlib_root: Optional[str] = None,
                               vocabulary_path: Optional[str] = None,
                               train_examples: Optional[int] = None) -> str:
  """Gin factory: the pretraining code -> docstring-summary task (installed packages, no
  download, disjoint from ``stdlib_docstrings``).

  Args:
    name: the task name to register.
    packages: top-level import names (default :data:`PACKAGES`).
    cache_dir: JSONL cache root (default ``$IRL_LM_CACHE_DIR`` or ``~/.cache/irl_lm``).
    stdlib_root: the standard library to stay disjoint from (default: the running one).
    vocabulary_path: SentencePiece model (default: the shipped one).
    train_examples: train on a fixed subset of N examples (default: all).

  Returns:
    `name`, for ``train.task``.
  """
  return spec.configure(SPEC, name, packages=spec.as_tuple(packages), cache_dir=cache_dir,
                        stdlib_root=stdlib_root, vocabulary_path=vocabulary_path,
                        train_examples=train_examples)
