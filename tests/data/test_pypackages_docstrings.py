"""The pretraining corpus: installed packages' code -> docstring summaries, disjoint from stdlib."""
import importlib.util
import os
import re

import pytest

from irl_lm.data import pipeline, registry
from irl_lm.data import pypackages_docstrings as pp
from irl_lm.data import stdlib_docstrings as sd

# Small pinned packages, so the tests extract in well under a second.
SMALL = ("gin", "sacrebleu", "rouge_score", "absl")
LENGTHS = {"inputs": 128, "targets": 32}


@pytest.fixture(scope="module")
def small_examples(stdlib_cache):
  return pp.extract_examples(SMALL, cache_dir=stdlib_cache)


def _stdlib_examples(cache_dir):
  return [ex for s in sd.SPLITS for ex in sd.load_examples(s, cache_dir=cache_dir)]


def test_default_packages_are_pinned_in_the_constraints_and_outside_the_stdlib():
  root = os.path.join(os.path.dirname(__file__), "..", "..")
  with open(os.path.join(root, "setup.py")) as f:
    setup_py = f.read()
  with open(os.path.join(root, "constraints", "py311.txt")) as f:
    # Names as pip writes them, normalised (PEP 503: rouge_score is rouge-score).
    pins = [re.sub(r"[-_.]+", "-", line.lower()) for line in f.read().splitlines()]
  for _, distribution in pp.PACKAGES:
    # A requirement or in an extra (quoted, maybe with a version range or a marker).
    assert re.search(rf"[\"']{re.escape(distribution)}[<>=;\[\"' ]", setup_py), distribution
    assert any(line.startswith(f"{distribution}==") for line in pins), distribution
  stdlib = os.path.realpath(sd.default_stdlib_root())
  dirs = pp.package_dirs()
  assert [name for name, _ in dirs] == [name for name, _ in pp.PACKAGES]
  for _, directory in dirs:
    assert not pp.is_stdlib_file(os.path.join(directory, "__init__.py"))
  for path, module in pp.iter_package_files(("gin", "numpy")):
    assert not pp.is_stdlib_file(path) and not path.endswith("_test.py")
    assert module.split(".")[0] in ("gin", "numpy")
    real = os.path.realpath(path)
    assert not real.startswith(stdlib + os.sep) or "site-packages" in real.split(os.sep)


def test_stdlib_packages_and_files_are_refused(tmp_path):
  with pytest.raises(ValueError, match="part of the standard library"):
    pp.package_dirs(["json"])
  with pytest.raises(ValueError, match="not an installed package"):
    pp.package_dirs(["no_such_package_xyz"])
  root = str(tmp_path / "lib" / "python3.11")
  assert pp.is_stdlib_file(os.path.join(root, "json", "decoder.py"), root)
  assert not pp.is_stdlib_file(os.path.join(root, "site-packages", "numpy", "x.py"), root)
  assert not pp.is_stdlib_file(str(tmp_path / "elsewhere" / "x.py"), root)


def test_examples_only_from_the_listed_packages_and_disjoint_from_stdlib(small_examples,
                                                                         stdlib_cache):
  assert len(small_examples) > 300
  assert {ex["name"].split(".")[0] for ex in small_examples} == set(SMALL)
  stdlib = _stdlib_examples(stdlib_cache)
  assert not {ex["name"] for ex in small_examples} & {ex["name"] for ex in stdlib}
  assert not {ex["code"] for ex in small_examples} & {ex["code"] for ex in stdlib}
  names = [ex["name"] for ex in small_examples]
  codes = [ex["code"] for ex in small_examples]
  assert len(set(names)) == len(names) and len(set(codes)) == len(codes)
  ex = next(e for e in small_examples if e["name"] == "gin.config.parse_config")
  assert ex["summary"].startswith("Parse a file, string, or list of strings")
  assert ex["code"].startswith("def parse_config(") and ex["summary"] not in ex["code"]


def test_an_example_whose_code_is_in_stdlib_is_dropped(tmp_path):
  stdlib_root = tmp_path / "stdlib"
  (stdlib_root / "shared").mkdir(parents=True)
  code = 'def twice(x):\n    """Return twice the given number x."""\n    return 2 * x\n'
  (stdlib_root / "shared" / "__init__.py").write_text(code)
  [stdlib_example] = sd.extract_examples(str(stdlib_root))
  examples = [{"name": "pkg.twice", "code": stdlib_example["code"], "summary": "Twice x here."},
              {"name": "shared.twice", "code": "def twice(): pass", "summary": "Other one."},
              {"name": "pkg.thrice", "code": "def thrice(x):\n    return 3 * x",
               "summary": "Return three x."}]
  kept = sd.unique_examples(examples, pp.split_for_name,
                            exclude_names=frozenset([stdlib_example["name"]]),
                            exclude_codes=frozenset([stdlib_example["code"]]))
  assert [ex["name"] for ex in kept] == ["pkg.thrice"]


def test_split_is_deterministic_98_2(small_examples):
  names = [f"pkg.mod.f{i}" for i in range(5000)]
  splits = [pp.split_for_name(n) for n in names]
  assert splits == [pp.split_for_name(n) for n in names]
  assert set(splits) == set(pp.SPLITS)
  assert 0.01 < splits.count("validation") / len(splits) < 0.03
  for ex in small_examples:
    assert ex["split"] == pp.split_for_name(ex["name"])


def test_cache_round_trips_and_is_keyed_by_packages(small_examples, stdlib_cache):
  paths = pp.cache_paths(SMALL, cache_dir=stdlib_cache)
  assert paths != pp.cache_paths(SMALL[:2], cache_dir=stdlib_cache)
  assert all(p.startswith(os.path.join(stdlib_cache, pp.TASK)) for p in paths.values())
  for split in pp.SPLITS:
    assert pp.load_examples(split, packages=SMALL, cache_dir=stdlib_cache) == [
        {k: ex[k] for k in sd.FIELDS} for ex in small_examples if ex["split"] == split]
  assert all(os.path.exists(p) for p in paths.values())
  with pytest.raises(ValueError, match="Unknown split"):
    pp.load_examples("test", packages=SMALL, cache_dir=stdlib_cache)


def test_registered_task_and_train_subset(small_examples, stdlib_cache, temp_task_names):
  assert pp.TASK in registry.TASK_NAMES and registry.metric_family(pp.TASK) == "rouge"
  assert pp.pypackages_docstrings_task in registry.FACTORIES
  temp_task_names += ["pp_full", "pp_small", "pp_large"]
  pp.register("pp_full", packages=SMALL)
  pp.pypackages_docstrings_task("pp_small", packages=list(SMALL), train_examples=10)
  pp.pypackages_docstrings_task("pp_large", packages=list(SMALL), train_examples=50)
  assert registry.metric_family("pp_small") == "rouge"
  texts = lambda task, split: [(ex["inputs_text"], ex["targets_text"]) for ex in
                               pipeline.get_examples(task, split, num_examples=None,
                                                     feature_lengths=LENGTHS)]
  everything = texts("pp_full", "train")
  assert everything == [(ex["code"], ex["summary"]) for ex in small_examples
                        if ex["split"] == "train"]
  small, large = texts("pp_small", "train"), texts("pp_large", "train")
  assert len(small) == 10 and len(large) == 50
  assert set(small) <= set(large) <= set(everything)
  assert texts("pp_small", "validation") == texts("pp_full", "validation")
