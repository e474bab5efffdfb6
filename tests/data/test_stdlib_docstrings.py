"""Tests of the built-in code -> docstring-summary extraction (pure Python, no TensorFlow)."""
import hashlib
import json
import os
import textwrap

import pytest

from irl_lm.data import stdlib_docstrings as sd

MOD_A = '''\
"""Module docstring (not an example)."""
import os


def add(a, b):
    """Add two numbers   and
    return the sum.  More text here.

    Details.
    """

    # add them
    return a + b


class Greeter:
    """Class docstring (not an example)."""

    @staticmethod
    def greet(name):
        """Return a greeting for name, e.g. Bob.  Second sentence."""
        return "hi " + name

    def only_doc(self):
        """Only a docstring here, so it is skipped."""

    def short(self):
        """Too short."""
        return 1

    def inline(self): "Docstring on the def line is skipped."; return 1

    def signature(self, k):
        """D.get(k[,d]) -> D[k] if k in D, else d."""
        return k


def no_doc():
    return 1


def outer():
    """Outer functions are examples, nested ones are not."""
    def inner():
        """Inner function docstring stays inside outer's code."""
        return 3
    return inner


if os.name:
    def cond():
        """Defined inside an if block at module level."""
        return 2
'''

EXPECTED_MOD_A = [
    {"name": "mod_a.add",
     "code": "def add(a, b):\n    # add them\n    return a + b",
     "summary": "Add two numbers and return the sum."},
    {"name": "mod_a.Greeter.greet",
     "code": '@staticmethod\ndef greet(name):\n    return "hi " + name',
     "summary": "Return a greeting for name, e.g. Bob."},
    {"name": "mod_a.outer",
     "code": ('def outer():\n    def inner():\n'
              '        """Inner function docstring stays inside outer\'s code."""\n'
              '        return 3\n    return inner'),
     "summary": "Outer functions are examples, nested ones are not."},
    {"name": "mod_a.cond",
     "code": "def cond():\n    return 2",
     "summary": "Defined inside an if block at module level."},
]


def _write(root, rel, text, encoding="utf-8"):
  path = os.path.join(root, rel)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding=encoding) as f:
    f.write(text)


@pytest.fixture()
def fake_stdlib(tmp_path):
  """A tiny standard library: good files, skipped dirs/files, a bad file, a latin-1 file."""
  root = str(tmp_path / "lib")
  _write(root, "mod_a.py", MOD_A)
  _write(root, "bad.py", "def broken(:\n    '''Never parsed at all.'''\n")
  _write(root, "latin.py", '# -*- coding: latin-1 -*-\ndef menu():\n'
         '    """Return the café menu."""\n    return "crêpe"\n', encoding="latin-1")
  # Same code as mod_a.add under another name: dropped as a duplicate input.
  _write(root, "zz_dup.py", 'def add(a, b):\n    """Add two numbers, duplicated."""\n\n'
         '    # add them\n    return a + b\n')
  _write(root, "pkg/__init__.py", "def init_fn(x):\n    '''Compute the init thing for x.'''\n"
         "    return x\n")
  _write(root, "pkg/sub.py", 'async def fetch(url):\n    """Fetch the page at url! Then"""\n'
         "    return url\n")
  _write(root, "fake/mod.py", "".join(
      f'def f{i}():\n    """Return the number {i} please."""\n    return {i}\n\n'
      for i in (0, 4, 6)))
  for skipped in ("pkg/test_helpers.py", "test/util.py", "tests/util.py", "idlelib/x.py",
                  "lib2to3/x.py", "site-packages/x.py", "pkg/tests/util.py"):
    _write(root, skipped, 'def never():\n    """This must never be extracted."""\n    return 0\n')
  return root


def test_fake_stdlib_exact_pairs(fake_stdlib):
  examples = sd.extract_examples(fake_stdlib)
  pairs = [{k: ex[k] for k in ("name", "code", "summary")} for ex in examples]
  expected = (
      [{"name": f"fake.mod.f{i}", "code": f"def f{i}():\n    return {i}",
        "summary": f"Return the number {i} please."} for i in (0, 4, 6)]
      + [{"name": "latin.menu", "code": 'def menu():\n    return "crêpe"',
          "summary": "Return the café menu."}]
      + EXPECTED_MOD_A
      + [{"name": "pkg.init_fn", "code": "def init_fn(x):\n    return x",
          "summary": "Compute the init thing for x."},
         {"name": "pkg.sub.fetch", "code": "async def fetch(url):\n    return url",
          "summary": "Fetch the page at url!"}])
  assert pairs == expected
  for ex in examples:  # docstrings are gone from the inputs
    assert ex["summary"] not in ex["code"]
    assert '"""' not in ex["code"] or ex["name"] == "mod_a.outer"


def test_fake_stdlib_splits_deterministic(fake_stdlib):
  first = sd.extract_examples(fake_stdlib)
  assert sd.extract_examples(fake_stdlib) == first
  for ex in first:
    bucket = int.from_bytes(hashlib.sha256(ex["name"].encode()).digest()[:8], "big") % 100
    assert ex["split"] == ("train" if bucket < 90 else "validation" if bucket < 95 else "test")
  splits = {ex["name"]: ex["split"] for ex in first}
  assert splits["fake.mod.f0"] == "train"
  assert splits["fake.mod.f6"] == "validation"
  assert splits["fake.mod.f4"] == "test"


def test_split_fractions():
  counts = {s: 0 for s in sd.SPLITS}
  for i in range(4000):
    counts[sd.split_for_name(f"m.f{i}")] += 1
  assert 0.87 < counts["train"] / 4000 < 0.93
  assert 0.03 < counts["validation"] / 4000 < 0.07
  assert 0.03 < counts["test"] / 4000 < 0.07


@pytest.mark.parametrize("doc, expected", [
    ("Return x.", None),  # too short
    ("Return   the\n  value of x.  Then more.", "Return the value of x."),
    ("Compute things, i.e. stuff, quickly. Rest.", "Compute things, i.e. stuff, quickly."),
    ("First line without period\n\nSecond paragraph.", "First line without period"),
    ("D.pop(k[,d]) -> v, remove specified key.", None),
    (">>> f(1) returns two", None),
    ("word " * 41, None),
    ("", None),
])
def test_docstring_summary(doc, expected):
  assert sd.docstring_summary(doc) == expected


def test_cache_written_and_reused(fake_stdlib, tmp_path, monkeypatch):
  monkeypatch.setenv(sd.CACHE_ENV_VAR, str(tmp_path / "envcache"))
  paths = sd.cache_paths(stdlib_root=fake_stdlib)
  assert all(p.startswith(str(tmp_path / "envcache")) for p in paths.values())
  test_examples = sd.load_examples("test", stdlib_root=fake_stdlib)
  assert [ex["name"] for ex in test_examples] == ["fake.mod.f4"]
  with open(paths["validation"], encoding="utf-8") as f:
    assert [json.loads(line) for line in f] == [
        {"name": "fake.mod.f6", "code": "def f6():\n    return 6",
         "summary": "Return the number 6 please."}]
  # A later call reads the cache instead of the (now changed) library.
  _write(fake_stdlib, "fake/mod.py", "")
  assert sd.load_examples("test", stdlib_root=fake_stdlib) == test_examples
  # An explicit cache_dir overrides the environment variable.
  other = sd.cache_paths(str(tmp_path / "argcache"), stdlib_root=fake_stdlib)
  assert other["train"].startswith(str(tmp_path / "argcache"))
  with pytest.raises(ValueError, match="Unknown split"):
    sd.load_examples("dev", stdlib_root=fake_stdlib)


def test_real_stdlib(tmp_path):
  examples = sd.extract_examples()
  assert len(examples) > 3000
  by_split = {s: {ex["name"] for ex in examples if ex["split"] == s} for s in sd.SPLITS}
  assert all(len(v) > 100 for v in by_split.values()), {k: len(v) for k, v in by_split.items()}
  assert len(by_split["train"]) > 0.85 * len(examples)
  assert not by_split["train"] & by_split["validation"]
  assert not by_split["train"] & by_split["test"]
  assert not by_split["validation"] & by_split["test"]
  names = [ex["name"] for ex in examples]
  assert len(set(names)) == len(names)
  assert not any(".test." in n or n.startswith(("test.", "idlelib.", "lib2to3.")) for n in names)
  byname = {ex["name"]: ex for ex in examples}
  # A well-known function: the summary is its docstring's first sentence, not in the input.
  ex = byname["textwrap.dedent"]
  assert ex["summary"] == "Remove any common leading whitespace from every line in `text`."
  assert ex["code"].startswith("def dedent(text):\n") and "Remove any common" not in ex["code"]
  # The cache round-trips the same examples in the same order.
  loaded = sd.load_examples("validation", cache_dir=str(tmp_path))
  assert loaded == [{k: e[k] for k in ("name", "code", "summary")}
                    for e in examples if e["split"] == "validation"]
  assert textwrap.dedent(ex["code"]) == ex["code"]
