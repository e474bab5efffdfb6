"""Built-in summarisation data: Python standard-library functions -> docstring summaries.

Every machine that runs irl_lm has a CPython standard library, i.e. tens of thousands of lines
of real, human-written code with human-written docstrings. This module turns it into a
code -> one-line-summary data set that needs no download:

* input (``code``): the source text of a function or method (decorators included, dedented),
  taken from the file with :mod:`ast` positions, with its docstring lines removed;
* target (``summary``): the first sentence of the docstring's first paragraph, whitespace
  collapsed.

Functions are taken from module bodies and class bodies (also inside module-level ``if`` /
``try`` / ``with`` blocks, e.g. platform variants), not from inside other functions. Files that
fail to decode or parse are skipped, as are test suites, IDLE, ``lib2to3``, ``site-packages``
and similar directories (:data:`SKIP_DIRS`). Examples with an empty, very short or very long
summary, a signature-style summary (``"D.get(k[,d]) -> D[k] ..."``), a docstring-only body or a
huge source are dropped, and exact duplicate inputs are kept once (first occurrence), so the
same code cannot land in two splits.

The split (train/validation/test, 90/5/5) is a stable function of the qualified name
``module.Class.method`` (SHA-256, not Python's salted ``hash``), and the examples come in file
order (sorted by relative path), then source order; the result is therefore fully deterministic
for a given standard library. The examples are cached as JSON lines (one file per split) under
``$IRL_LM_CACHE_DIR`` (default ``~/.cache/irl_lm``), keyed by the extractor version, the Python
version and the library path, so only the first call pays for the extraction (a few seconds).

Task ``stdlib_docstrings`` (metric family ``rouge``): ``code`` -> inputs, ``summary`` -> targets
(``name`` kept as metadata), the shipped vocabulary :func:`vocabularies.stdlib_vocabulary`;
gin: ``train.task = @stdlib_docstrings_task()``. ``train_examples`` = N trains on a fixed subset
of N train examples (:func:`irl_lm.data.sources.train_subset`: the same N for every run and
seed, nested). This module is pure Python: :func:`register` imports seqio (and TensorFlow) when
called.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import sys
import sysconfig
import textwrap
import tokenize
import warnings
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Sequence

from irl_lm.data import spec

if TYPE_CHECKING:  # pragma: no cover
  import seqio

TASK = "stdlib_docstrings"
FIELDS = ("name", "code", "summary")

# Bump when the extraction rules change: it is part of the cache key.
EXTRACTOR_VERSION = 1

SPLITS: tuple[str, ...] = ("train", "validation", "test")
# Cumulative percentages of the hash buckets [0, 100) for each split.
_SPLIT_PERCENT = (("train", 90), ("validation", 95), ("test", 100))

CACHE_ENV_VAR = "IRL_LM_CACHE_DIR"

# Directory names skipped anywhere under the library root.
SKIP_DIRS = frozenset({
    "test", "tests", "idle_test", "idlelib", "lib2to3", "site-packages", "dist-packages",
    "__pycache__", "turtledemo", "ensurepip", "lib-dynload", "pydoc_data", "__phello__",
})

MIN_SUMMARY_WORDS = 3
MAX_SUMMARY_WORDS = 40
MAX_SUMMARY_CHARS = 250
MAX_CODE_CHARS = 3000

_ABBREVIATIONS = frozenset({"e.g", "i.e", "eg", "ie", "etc", "cf", "vs", "resp", "approx"})
_SIGNATURE_RE = re.compile(r"^[\w.]+\s*\(.*\)")
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")


def default_stdlib_root() -> str:
  """Returns the directory of the running interpreter's pure-Python standard library."""
  return sysconfig.get_paths()["stdlib"]


def default_cache_dir() -> str:
  """Returns ``$IRL_LM_CACHE_DIR`` if set, else ``~/.cache/irl_lm``."""
  return os.environ.get(CACHE_ENV_VAR) or os.path.join(
      os.path.expanduser("~"), ".cache", "irl_lm")


def split_for_name(qualified_name: str,
                   split_percent: Sequence[tuple[str, int]] = _SPLIT_PERCENT) -> str:
  """Maps a qualified name to its split with a stable hash.

  Args:
    qualified_name: e.g. ``'json.decoder.JSONDecoder.decode'``.
    split_percent: ``(split, cumulative percent)`` pairs ending at 100; default 90/5/5
      train/validation/test.

  Returns:
    The split whose hash-bucket range [0, 100) holds the name (by default ``'train'`` for 90 %
    of names, ``'validation'`` 5 %, ``'test'`` 5 %); the same on every machine and process.
  """
  digest = hashlib.sha256(qualified_name.encode("utf-8")).digest()
  bucket = int.from_bytes(digest[:8], "big") % 100
  for split, upper in split_percent:
    if bucket < upper:
      return split
  raise ValueError(f"split_percent {split_percent!r} does not end at 100.")


def docstring_summary(docstring: Optional[str]) -> Optional[str]:
  """Returns the cleaned first sentence of a docstring, or None if it is unusable.

  Args:
    docstring: a docstring as returned by ``ast.get_docstring`` (indentation cleaned).

  Returns:
    The first sentence of the first paragraph with all whitespace runs collapsed to one space
    (terminal punctuation kept), or None when it has fewer than ``MIN_SUMMARY_WORDS`` or more
    than ``MAX_SUMMARY_WORDS`` words, more than ``MAX_SUMMARY_CHARS`` characters, looks like a
    call signature (``'f(x) -> y'``) or a doctest, or has no letters.
  """
  if not docstring:
    return None
  paragraph = re.split(r"\n\s*\n", docstring.strip(), maxsplit=1)[0]
  text = " ".join(paragraph.split())
  for match in _SENTENCE_END_RE.finditer(text):
    last_word = text[:match.start()].rsplit(" ", 1)[-1].lower()
    if last_word in _ABBREVIATIONS:
      continue
    text = text[:match.end()]
    break
  words = text.split()
  if not MIN_SUMMARY_WORDS <= len(words) <= MAX_SUMMARY_WORDS:
    return None
  if len(text) > MAX_SUMMARY_CHARS or "->" in text or text.startswith(">>>"):
    return None
  if _SIGNATURE_RE.match(text) or not re.search(r"[A-Za-z]", text):
    return None
  return text


def iter_python_files(root: str) -> Iterator[str]:
  """Yields the .py files under `root`, skipping SKIP_DIRS, sorted by relative path parts."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames
                   if d not in SKIP_DIRS and not d.startswith((".", "config-"))]
    for filename in filenames:
      if filename.endswith(".py") and not filename.startswith("test_"):
        path = os.path.join(dirpath, filename)
        found.append((tuple(os.path.relpath(path, root).split(os.sep)), path))
  for _, path in sorted(found):
    yield path


def module_name(root: str, path: str) -> str:
  """The dotted module name of `path` relative to `root` (a package's ``__init__`` -> itself)."""
  rel = os.path.relpath(path, root)[:-len(".py")]
  parts = rel.split(os.sep)
  if parts[-1] == "__init__" and len(parts) > 1:
    parts = parts[:-1]
  return ".".join(parts)


def _iter_functions(body: list[ast.stmt], prefix: str
                    ) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
  """Yields (qualified name, node) for functions in a module/class body, in source order."""
  for node in body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      yield f"{prefix}.{node.name}", node
    elif isinstance(node, ast.ClassDef):
      yield from _iter_functions(node.body, f"{prefix}.{node.name}")
    elif isinstance(node, ast.If):
      yield from _iter_functions(node.body, prefix)
      yield from _iter_functions(node.orelse, prefix)
    elif isinstance(node, ast.Try):
      for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
        yield from _iter_functions(block, prefix)
    elif isinstance(node, (ast.With, ast.AsyncWith)):
      yield from _iter_functions(node.body, prefix)


def _byte_prefix(line: str, col: int) -> str:
  """The text of `line` before the UTF-8 byte offset `col` (ast columns are byte offsets)."""
  return line.encode("utf-8")[:col].decode("utf-8", errors="replace")


def _byte_suffix(line: str, col: int) -> str:
  return line.encode("utf-8")[col:].decode("utf-8", errors="replace")


def _code_without_docstring(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef
                            ) -> Optional[str]:
  """Returns the function's dedented source with its docstring lines removed, or None.

  None when the docstring shares a line with other code, or the body is only the docstring.
  """
  doc_node = node.body[0]
  if len(node.body) < 2:
    return None
  first, last = doc_node.lineno, doc_node.end_lineno
  if (_byte_prefix(lines[first - 1], doc_node.col_offset).strip()
      or _byte_suffix(lines[last - 1], doc_node.end_col_offset).strip()):
    return None
  start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
  kept = lines[start - 1:first - 1]
  after = lines[last:node.end_lineno]
  if after and not after[0].strip():  # the blank line that usually follows a docstring
    after = after[1:]
  if not after:
    return None
  code = textwrap.dedent("\n".join(line.rstrip() for line in kept + after))
  return code.strip("\n")


def extract_file(path: str, module: str) -> list[dict[str, str]]:
  """Extracts the examples of one source file.

  Args:
    path: a .py file.
    module: its dotted module name, the prefix of every qualified name.

  Returns:
    A list (source order) of dicts with keys ``name`` (qualified name), ``code`` (source
    without docstring) and ``summary`` (docstring first sentence); empty when the file cannot
    be decoded or parsed.
  """
  try:
    with tokenize.open(path) as f:  # honours PEP 263 coding cookies
      source = f.read()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # invalid escape sequences etc. in old modules
      tree = ast.parse(source, filename=path)
  except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
    return []
  lines = source.split("\n")  # text mode already turned \r\n and \r into \n
  examples = []
  for name, node in _iter_functions(tree.body, module):
    summary = docstring_summary(ast.get_docstring(node, clean=True))
    if summary is None:
      continue
    code = _code_without_docstring(lines, node)
    if code is None or len(code) > MAX_CODE_CHARS:
      continue
    examples.append({"name": name, "code": code, "summary": summary})
  return examples


def unique_examples(examples: Iterable[dict[str, str]], split_fn: Callable[[str], str], *,
                    exclude_names: frozenset[str] = frozenset(),
                    exclude_codes: frozenset[str] = frozenset()) -> list[dict[str, str]]:
  """Keeps the first example of each qualified name and of each code, and assigns splits.

  Args:
    examples: dicts with keys ``name``, ``code``, ``summary`` (e.g. from :func:`extract_file`).
    split_fn: qualified name -> split.
    exclude_names: qualified names to drop (e.g. those of another data set).
    exclude_codes: codes to drop.

  Returns:
    The kept examples in input order, each with a ``split`` key added; qualified names and
    codes are unique, so the same code cannot land in two splits.
  """
  kept, seen_names, seen_codes = [], set(exclude_names), set(exclude_codes)
  for example in examples:
    if example["name"] in seen_names or example["code"] in seen_codes:
      continue
    seen_names.add(example["name"])
    seen_codes.add(example["code"])
    kept.append({**example, "split": split_fn(example["name"])})
  return kept


def extract_examples(stdlib_root: Optional[str] = None) -> list[dict[str, str]]:
  """Extracts the whole data set from a standard-library directory (no caching).

  Args:
    stdlib_root: the library root; default :func:`default_stdlib_root`.

  Returns:
    Deterministically ordered dicts with keys ``name``, ``code``, ``summary`` and ``split``;
    qualified names and codes are unique.
  """
  root = os.path.abspath(stdlib_root or default_stdlib_root())
  examples = (example for path in iter_python_files(root)
              for example in extract_file(path, module_name(root, path)))
  return unique_examples(examples, split_for_name)


def cache_paths(cache_dir: Optional[str] = None, stdlib_root: Optional[str] = None
                ) -> dict[str, str]:
  """Returns the JSONL path of each split's cache file (they may not exist yet).

  Args:
    cache_dir: cache root; default :func:`default_cache_dir`.
    stdlib_root: library root; default :func:`default_stdlib_root`.

  Returns:
    ``{split: path}`` for the splits in :data:`SPLITS`, in a directory keyed by the extractor
    version, the Python version and a hash of the library path.
  """
  root = os.path.abspath(stdlib_root or default_stdlib_root())
  root_hash = hashlib.sha256(root.encode("utf-8")).hexdigest()[:12]
  py = ".".join(str(v) for v in sys.version_info[:3])
  key = f"v{EXTRACTOR_VERSION}-py{py}-{root_hash}"
  directory = os.path.join(cache_dir or default_cache_dir(), "stdlib_docstrings", key)
  return {split: os.path.join(directory, f"{split}.jsonl") for split in SPLITS}


def ensure_cache(cache_dir: Optional[str] = None, stdlib_root: Optional[str] = None
                 ) -> dict[str, str]:
  """Extracts and writes the cache unless it exists; returns :func:`cache_paths`."""
  return fill_cache(cache_paths(cache_dir, stdlib_root), lambda: extract_examples(stdlib_root))


def fill_cache(paths: dict[str, str], extract: Callable[[], Sequence[dict[str, str]]]
               ) -> dict[str, str]:
  """Writes ``extract()`` to `paths` (:func:`write_cache`) unless every file exists.

  Args:
    paths: ``{split: JSONL path}``.
    extract: returns the examples, each with a ``split`` key (called only if needed).

  Returns:
    `paths`.
  """
  if not all(os.path.exists(p) for p in paths.values()):
    write_cache(paths, extract())
  return paths


def write_cache(paths: dict[str, str], examples: Sequence[dict[str, str]]) -> None:
  """Writes each split's examples (``name``, ``code``, ``summary``) to ``paths[split]`` as JSONL.

  Files are written to a temporary name and renamed, so concurrent processes never read a
  partial file.
  """
  for split, path in paths.items():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      for ex in examples:
        if ex["split"] == split:
          record = {"name": ex["name"], "code": ex["code"], "summary": ex["summary"]}
          f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_cache(path: str) -> list[dict[str, str]]:
  """Reads one split's JSONL cache file written by :func:`write_cache`."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def load_examples(split: str, *, cache_dir: Optional[str] = None,
                  stdlib_root: Optional[str] = None) -> list[dict[str, str]]:
  """Returns one split's examples, extracting and caching them on first use.

  Args:
    split: one of :data:`SPLITS`.
    cache_dir: cache root; default :func:`default_cache_dir`.
    stdlib_root: library root; default :func:`default_stdlib_root`.

  Returns:
    Dicts with keys ``name``, ``code``, ``summary`` in the deterministic data-set order.
  """
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r} for stdlib_docstrings; use one of {SPLITS}.")
  return read_cache(ensure_cache(cache_dir, stdlib_root)[split])


def register(name: str = TASK, *, cache_dir: Optional[str] = None,
             stdlib_root: Optional[str] = None, vocabulary_path: Optional[str] = None,
             train_examples: Optional[int] = None, replace: bool = False) -> "seqio.Task":
  """Registers a built-in code -> summary task (unless `name` is registered already).

  Args:
    name: task name.
    cache_dir: JSONL cache root (default: read from ``$IRL_LM_CACHE_DIR`` at load time).
    stdlib_root: library to extract from (default: the running interpreter's).
    vocabulary_path: SentencePiece model for inputs and targets (default: the shipped one).
    train_examples: keep a fixed subset of this many train examples (None: all).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task``; nothing is read or extracted until a dataset is requested.
  """
  return add_docstring_task(
      name, lambda split: load_examples(split, cache_dir=cache_dir, stdlib_root=stdlib_root),
      vocabulary_path=vocabulary_path, train_examples=train_examples, replace=replace)


def add_docstring_task(name: str, load: Callable[[str], Sequence[dict[str, str]]], *,
                       vocabulary_path: Optional[str], train_examples: Optional[int],
                       replace: bool, splits: Sequence[str] = SPLITS,
                       metric: str = "rouge") -> "seqio.Task":
  """Registers a code -> summary task over `load(split)` examples ({'code', 'summary',
  'name'}) of `splits`, with the shipped SentencePiece vocabulary by default (both docstring
  tasks)."""
  # pylint: disable=g-import-not-at-top
  from irl_lm.data import tasks
  from irl_lm.data import vocabularies
  return tasks.add_in_memory_task(
      name, load_split=functools.lru_cache(None)(load), splits=tuple(splits),
      inputs_key="code", targets_key="summary",
      vocabulary=vocabularies.stdlib_vocabulary(vocabulary_path or vocabularies.STDLIB_VOCAB_PATH),
      metric=metric, replace=replace, train_examples=train_examples)


SPEC = spec.TaskSpec(name=TASK, metric="rouge", register=register)


def stdlib_docstrings_task(name: str = TASK, cache_dir: Optional[str] = None,
                           stdlib_root: Optional[str] = None,
                           vocabulary_path: Optional[str] = None,
                           train_examples: Optional[int] = None) -> str:
  """Gin factory: the built-in code -> docstring-summary task (no download).

  Args:
    name: the task name to register.
    cache_dir: JSONL cache root (default ``$IRL_LM_CACHE_DIR`` or ``~/.cache/irl_lm``).
    stdlib_root: library to extract from (default: the running interpreter's).
    vocabulary_path: SentencePiece model (default: the shipped one).
    train_examples: train on a fixed subset of N examples (default: all).

  Returns:
    `name`, for ``train.task``.
  """
  return spec.configure(SPEC, name, cache_dir=cache_dir, stdlib_root=stdlib_root,
                        vocabulary_path=vocabulary_path, train_examples=train_examples)
