"""The package's shape: layers import only downward, files stay small, functions take few
parameters (settings travel as objects), token ids live once.

Layers (docs/INTERFACES.md): cpu <- ops, errors <- models, data, partitioning <- losses, checkpoints <- decoding <-
training, evaluation <- jobs <- runner <- config <- main, convert. A module may import its own
unit and units of a lower rank, never one of the same rank (training and evaluation stay
independent) or above. Every import counts, also those inside functions.
"""
import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "irl_lm"

RANKS = {
    "cpu": -2,
    "ops": -1, "errors": -1,
    "models": 0, "data": 0, "partitioning": 0,
    "losses": 1, "checkpoints": 1,
    "decoding": 2,
    "training": 3, "evaluation": 3,
    "jobs": 4,
    "runner": 5,
    "config": 6,
    "main": 7, "convert": 7,
    # Entry points above config: sweeps drive runs through subprocesses and read their files.
    "experiments": 8,
    "reproduce": 9,
}
MAX_LINES = 600
# The most parameters of a function (`self` / `cls` not counted) in these units: wider
# settings go in a dataclass (`training.settings`).
MAX_PARAMETERS = 10
NARROW_UNITS = ("jobs", "training")


def _unit(module: str) -> str:
  """'irl_lm.training.step' -> 'training'."""
  return module.split(".")[1]


def _modules():
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    yield path, ".".join(parts)


def _imports(path: pathlib.Path, module: str):
  """Absolute names of the irl_lm modules `path` imports (relative imports resolved)."""
  package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] +
                        ([base] if base else []))
      names = [base] + [f"{base}.{alias.name}" for alias in node.names]
    else:
      continue
    for name in names:
      if name.startswith("irl_lm.") and name.count(".") >= 1:
        yield node.lineno, name


def _is_module(name: str) -> bool:
  relative = pathlib.Path(*name.split(".")[1:])
  return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative).is_dir()


def test_every_unit_has_a_layer():
  units = {_unit(module) for _, module in _modules() if module != "irl_lm"}
  assert units <= set(RANKS), f"place these in RANKS (and the docs): {units - set(RANKS)}"


def test_imports_only_go_down():
  violations = []
  for path, module in _modules():
    if module == "irl_lm":
      continue
    unit = _unit(module)
    for line, name in _imports(path, module):
      if not _is_module(name):
        continue  # `from irl_lm.x import some_function`: the module itself is checked
      target = _unit(name)
      if target != unit and RANKS[target] >= RANKS[unit]:
        violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({unit}, layer "
                          f"{RANKS[unit]}) imports {name} ({target}, layer {RANKS[target]})")
  assert not violations, "upward or sideways imports:\n" + "\n".join(violations)


def test_no_file_is_longer_than_600_lines():
  long = [f"{p.relative_to(PACKAGE.parent)}: {n}" for p, _ in _modules()
          if (n := len(p.read_text().splitlines())) > MAX_LINES]
  assert not long, f"split these files: {long}"


def parameter_count(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
  """The parameters a caller can pass (`*args` and `**kwargs` count one each)."""
  args = function.args
  names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
  if names and names[0] in ("self", "cls"):
    names = names[1:]
  return len(names) + (args.vararg is not None) + (args.kwarg is not None)


def _wide_functions(source: str) -> list[tuple[str, int]]:
  return [(node.name, parameter_count(node)) for node in ast.walk(ast.parse(source))
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
          and parameter_count(node) > MAX_PARAMETERS]


def test_no_function_in_jobs_or_training_takes_more_than_10_parameters():
  wide = [f"{p.relative_to(PACKAGE.parent)}: {name} ({count})"
          for unit in NARROW_UNITS for p in sorted((PACKAGE / unit).rglob("*.py"))
          for name, count in _wide_functions(p.read_text())]
  assert not wide, f"more than {MAX_PARAMETERS} parameters: {wide}"


def test_parameter_count():
  source = ("def f(a, b, /, c, *d, e, **f): pass\n"
            "class C:\n  def m(self, " + ", ".join(f"x{i}" for i in range(11)) + "): pass\n")
  counts = {node.name: parameter_count(node) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef)}
  assert counts == {"f": 6, "m": 11}
  assert _wide_functions(source) == [("m", 11)]


def test_token_ids_are_defined_once():
  definitions = sorted(f"{p.relative_to(PACKAGE.parent)} {match.group(1)}" for p, _ in _modules()
                       for line in p.read_text().splitlines()
                       if (match := re.match(r"\s*(EOS_ID|PAD_ID|BOS_ID)\s*=", line)))
  assert definitions == ["irl_lm/models/base.py EOS_ID", "irl_lm/models/base.py PAD_ID"]


@pytest.mark.parametrize("source,expected", [
    ("from irl_lm.training import trainer", ["irl_lm.training", "irl_lm.training.trainer"]),
    ("from . import layers", ["irl_lm.models", "irl_lm.models.layers"]),
    ("import irl_lm.evaluation.metrics", ["irl_lm.evaluation.metrics"]),
])
def test_import_parsing(tmp_path, source, expected):
  path = tmp_path / "t5.py"
  path.write_text(source + "\n")
  assert [name for _, name in _imports(path, "irl_lm.models.t5")] == expected
