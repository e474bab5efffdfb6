"""The task registry: every task, its metric family and gin factory, registration on first use."""
import inspect
import subprocess
import sys

import pytest
import seqio

from irl_lm.data import arithmetic, gsm8k, local_files, pipeline, pypackages_docstrings, registry
from irl_lm.data import stdlib_docstrings, tasks, tldr
from irl_lm.data import vocabularies, wmt, xsum
from tests.data import helpers

FACTORY_NAMES = ["stdlib_docstrings_task", "xsum_task", "tldr_task", "tldr_openai_task",
                 "gsm8k_task", "wmt22_en_de_task", "arithmetic_task",
                 "pypackages_docstrings_task", "local_files_task", "known_distribution_task"]


def test_all_tasks_registered_with_metric_families():
  assert set(registry.TASK_NAMES) == {"stdlib_docstrings", "xsum", "tldr", "tldr_openai", "gsm8k",
                                      "wmt22_en_de", "arithmetic_word_problems",
                                      "pypackages_docstrings", "local_files",
                                      "known_distribution"}
  assert {n: registry.metric_family(n) for n in registry.TASK_NAMES} == {
      "stdlib_docstrings": "rouge", "xsum": "rouge", "tldr": "rouge", "tldr_openai": "rouge",
      "gsm8k": "gsm8k", "wmt22_en_de": "translation", "arithmetic_word_problems": "gsm8k",
      "pypackages_docstrings": "rouge", "local_files": "rouge", "known_distribution": "rouge"}
  # T5's vocabulary, unread. Their defaults: a test file run earlier in this process may have
  # called their gin factories with other settings (e.g. a checkpoint's tokenizer.json).
  for name in ("xsum", "tldr", "tldr_openai", "gsm8k", "wmt22_en_de", "local_files"):
    registry.forget(name)
    vocab = pipeline.get_vocabulary(name)
    assert vocab.sentencepiece_model_file == vocabularies.T5_VOCAB_PATH
    assert vocab.extra_ids == 100 and vocab._model is None  # pylint: disable=protected-access
  assert pipeline.get_vocabulary("arithmetic_word_problems").vocab_size == 480
  assert pipeline.get_task("pypackages_docstrings").splits == ("train", "validation")
  assert pipeline.get_task("gsm8k").splits == ("train", "test")
  assert pipeline.get_task("wmt22_en_de").splits == ("train", "validation", "test")
  assert pipeline.get_task("local_files").splits == ("train", "validation")
  # Registered (importing the pipeline): the in-memory tasks with irl_lm, the others with seqio.
  needs_seqio = {s.name for s in registry.SPECS if s.needs_seqio}
  assert needs_seqio == {"xsum", "tldr", "wmt22_en_de"}
  assert set(registry.TASK_NAMES) - needs_seqio <= set(tasks.names())
  assert needs_seqio <= set(seqio.TaskRegistry.names())


def test_factories_keep_their_gin_names_and_take_train_examples():
  assert [f.__name__ for f in registry.FACTORIES] == FACTORY_NAMES
  for factory, task_spec in zip(registry.FACTORIES, registry.SPECS):
    params = inspect.signature(factory).parameters
    assert params["name"].default == task_spec.name
    assert params["train_examples"].default is None
    # Every factory setting is a keyword of the task's register function.
    register_params = inspect.signature(task_spec.register).parameters
    assert set(params) - {"name"} <= set(register_params), factory.__name__


def test_importing_the_registry_and_factories_loads_neither_tensorflow_nor_seqio():
  code = ("import sys\n"
          "from irl_lm.data import registry\n"
          "names = [f() for f in registry.FACTORIES]\n"
          "names.append(registry.FACTORIES[4]('g', data_dir='/x', train_examples=5))\n"
          "assert registry.metric_family('g') == 'gsm8k'\n"
          "names.append(registry.FACTORIES[7]('p', packages=['gin'], train_examples=5))\n"
          "assert registry.metric_family('p') == 'rouge'\n"
          "names.append(registry.FACTORIES[8]('l', train_path='/x.tsv', metric='gsm8k'))\n"
          "assert registry.metric_family('l') == 'gsm8k'\n"
          "from irl_lm import config\n"
          "config.parse(['tasks/gsm8k.gin', 'tasks/stdlib_docstrings.gin',\n"
          "              'tasks/pypackages_docstrings.gin', 'tasks/local_files.gin'])\n"
          "config.parse(['pretrain_tiny.gin'])\n"
          "heavy = sorted(m for m in ('tensorflow', 'seqio', 'tensorflow_datasets')\n"
          "               if m in sys.modules)\n"
          "print(len(names), heavy)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split("\n")[-2] == "13 []"


def test_registered_on_first_use_with_the_factory_settings(temp_task_names):
  temp_task_names.append("arith_cfg")
  assert arithmetic.arithmetic_task("arith_cfg", sizes={"train": 5, "validation": 2,
                                                        "test": 2}) == "arith_cfg"
  assert "arith_cfg" not in seqio.TaskRegistry.names()  # a factory only records settings
  assert registry.metric_family("arith_cfg") == "gsm8k"
  task = pipeline.get_task("arith_cfg")
  assert len(pipeline.get_examples("arith_cfg", "test", num_examples=None,
                                   feature_lengths={"inputs": 96, "targets": 160})) == 2
  arithmetic.arithmetic_task("arith_cfg", sizes={"train": 5, "validation": 2, "test": 2})
  assert pipeline.get_task("arith_cfg") is task  # same settings: the same task
  arithmetic.arithmetic_task("arith_cfg", sizes={"train": 5, "validation": 2, "test": 3})
  assert pipeline.get_task("arith_cfg") is not task  # new settings: registered again
  assert "arith_cfg" in registry.known_names()
  registry.forget("arith_cfg")
  assert "arith_cfg" not in seqio.TaskRegistry.names()
  assert "arith_cfg" not in registry.known_names()
  assert not registry.ensure_registered("arith_cfg")
  assert not registry.ensure_registered("no_such_task")


def test_a_registered_default_task_is_kept():
  task = pipeline.get_task("gsm8k")
  assert registry.ensure_registered("gsm8k")
  assert gsm8k.register() is task  # idempotent
  assert pipeline.get_task("gsm8k") is task


@pytest.mark.parametrize("register", [
    lambda: stdlib_docstrings.register("probe_stdlib", stdlib_root="/nonexistent"),
    lambda: xsum.register("probe_xsum", train_examples=10),
    lambda: gsm8k.register("probe_gsm8k", data_dir="/nonexistent"),
    lambda: tldr.register_openai("probe_tldr_openai", data_dir="/nonexistent"),
    lambda: tldr.register_tfds("probe_tldr"),
    lambda: wmt.register("probe_wmt", train_files=["/nonexistent/*.tsv"]),
    lambda: arithmetic.register("probe_arithmetic"),
    lambda: pypackages_docstrings.register("probe_pypackages", packages=["no_such_package"]),
    lambda: local_files.register("probe_local_files", train_path="/nonexistent/train.tsv"),
], ids=["stdlib_docstrings", "xsum", "gsm8k", "tldr_openai", "tldr", "wmt22_en_de",
        "arithmetic", "pypackages_docstrings", "local_files"])
def test_registration_touches_nothing(register, temp_task_names):
  with helpers.outside_world_forbidden():
    task = register()
  temp_task_names.append(task.name)
  vocabulary = task.output_features["targets"].vocabulary
  assert vocabulary._model is None  # pylint: disable=protected-access
