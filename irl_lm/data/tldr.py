"""TL;DR summarisation: TFDS ``reddit_tifu/long_split`` or the OpenAI TL;DR JSON lines.

Two sources for the same task (Reddit post -> its author's TL;DR):

* TFDS ``reddit_tifu/long_split:1.1.2`` (registered as task ``tldr``): ``documents`` -> inputs,
  ``tldr`` -> targets, splits train/validation/test (PEGASUS's 80/10/10). Prepare it with
  ``tfds build reddit_tifu/long_split`` (downloads ~640 MiB).
* The filtered TL;DR data set of OpenAI's "Learning to summarize from human feedback"
  (registered as task ``tldr_openai``): one JSON object a line with ``id``, ``subreddit``,
  ``title``, ``post`` and ``summary``, published as
  ``https://openaipublic.blob.core.windows.net/summarize-from-feedback/datasets/tldr_3_filtered/
  {train,valid,test}.jsonl``. Put the three files in ``<data root>/tldr`` (or point gin's
  ``tldr_openai_task.data_dir`` at them). Inputs are ``input_template`` filled with the record's
  fields (default ``'summarize: {post}'``); targets are the summaries, stripped (they start with
  a space in the files).

Both use T5's vocabulary and the metric family ``rouge``; gin: ``train.task = @tldr_task()`` or
``@tldr_openai_task()``. ``train_examples`` = N trains on a fixed subset: for TFDS the first N
examples in TFDS's stored (build-time shuffled) order, for the JSONL the subset of
:func:`irl_lm.data.sources.train_subset`; both are the same for every run and seed, and nest.
Importing this module imports neither TensorFlow nor seqio.
"""
from __future__ import annotations

import functools
import os
import string
from typing import TYPE_CHECKING, Optional

from irl_lm.data import sources
from irl_lm.data import spec

if TYPE_CHECKING:  # pragma: no cover
  import seqio

TASK = "tldr"
OPENAI_TASK = "tldr_openai"
TFDS_NAME = "reddit_tifu/long_split:1.1.2"
SPLIT_FILES = {"train": "train.jsonl", "validation": "valid.jsonl", "test": "test.jsonl"}
SPLITS = tuple(SPLIT_FILES)
SOURCE_URL = ("https://openaipublic.blob.core.windows.net/summarize-from-feedback/datasets/"
              "tldr_3_filtered")
DEFAULT_SUBDIR = "tldr"
DEFAULT_INPUT_TEMPLATE = "summarize: {post}"
RECORD_FIELDS = ("id", "subreddit", "title", "post", "summary")


def check_template(input_template: str) -> None:
  """Raises ValueError unless `input_template` only uses the JSONL's field names."""
  names = {name for _, name, _, _ in string.Formatter().parse(input_template) if name}
  unknown = sorted(names - set(RECORD_FIELDS))
  if unknown:
    raise ValueError(f"tldr input_template {input_template!r} uses unknown field(s) {unknown}: "
                     f"use {{post}}, {{title}}, {{subreddit}} or {{id}}.")


def load_split(split: str, data_dir: Optional[str] = None,
               input_template: str = DEFAULT_INPUT_TEMPLATE) -> list[dict[str, str]]:
  """Reads one split of the OpenAI TL;DR JSONL.

  Args:
    split: ``'train'``, ``'validation'`` (file ``valid.jsonl``) or ``'test'``.
    data_dir: the folder with the three files (default ``<data root>/tldr``).
    input_template: ``str.format`` template over the record's fields.

  Returns:
    Dicts with str fields ``inputs`` (the filled template), ``targets`` (the stripped
    summary) and ``id``, in file order.

  Raises:
    ValueError: unknown split, bad template or malformed file.
    MissingDatasetError: the file is absent; the message names the URL and the path.
  """
  if split not in SPLIT_FILES:
    raise ValueError(f"TL;DR has no split {split!r}: use one of {SPLITS}.")
  check_template(input_template)
  directory = sources.resolve_dir(data_dir, DEFAULT_SUBDIR)
  file_name = SPLIT_FILES[split]
  path = os.path.join(directory, file_name)
  sources.require_file(
      path, f"The OpenAI TL;DR {split} split",
      f"download {SOURCE_URL}/{file_name} to {path}, or point gin's tldr_openai_task.data_dir "
      f"(or ${sources.DATA_DIR_ENV_VAR}) at the folder holding train.jsonl, valid.jsonl and "
      "test.jsonl")
  records = sources.read_jsonl(path, required=("post", "summary"))
  out = []
  for r in records:
    fields = {k: str(r.get(k, "")) for k in RECORD_FIELDS}
    out.append({"inputs": input_template.format(**fields), "targets": fields["summary"].strip(),
                "id": fields["id"]})
  return out


def register_tfds(name: str = TASK, *, tfds_data_dir: Optional[str] = None,
                  vocabulary_path: Optional[str] = None, train_examples: Optional[int] = None,
                  replace: bool = False) -> "seqio.Task":
  """Registers TL;DR on TFDS ``reddit_tifu/long_split:1.1.2`` (documents -> tldr).

  Args:
    name: task name.
    tfds_data_dir: TFDS data directory (default TFDS's); prepare the data set there with
      ``tfds build reddit_tifu/long_split``.
    vocabulary_path: T5 SentencePiece model (default: T5's public copy, read lazily), or a
      Hugging Face tokenizer.json or checkpoint directory (an imported decoder-only model's).
    train_examples: read only the first N train examples (TFDS's ``train[:N]``; None: all).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task`` (inputs ``'summarize: ' + documents``, splits
    train/validation/test); nothing is read until a dataset is requested.
  """
  from irl_lm.data import seqio_tasks  # pylint: disable=g-import-not-at-top  (TensorFlow)
  source = seqio_tasks.tfds_source(TFDS_NAME, tfds_data_dir=tfds_data_dir,
                                   train_examples=train_examples)
  return seqio_tasks.add_task(
      name, source=source,
      preprocessors=[seqio_tasks.rekey(inputs="documents", targets="tldr"),
                     seqio_tasks.prefix(seqio_tasks.T5_SUMMARIZE_PREFIX)],
      vocabulary=seqio_tasks.t5_vocabulary(vocabulary_path), metric=SPEC.metric, replace=replace)


def register_openai(name: str = OPENAI_TASK, *, data_dir: Optional[str] = None,
                    input_template: str = DEFAULT_INPUT_TEMPLATE,
                    vocabulary_path: Optional[str] = None, train_examples: Optional[int] = None,
                    replace: bool = False) -> "seqio.Task":
  """Registers TL;DR on the OpenAI JSON lines (``{train,valid,test}.jsonl``, post -> summary).

  Args:
    name: task name.
    data_dir: folder of the JSONL files (default ``<data root>/tldr``).
    input_template: how inputs are built from a record (default ``'summarize: {post}'``).
    vocabulary_path: T5 SentencePiece model (default: T5's public copy, read lazily), or a
      Hugging Face tokenizer.json or checkpoint directory (an imported decoder-only model's).
    train_examples: keep a fixed subset of this many train examples (None: all).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task`` (splits train/validation/test).
  """
  check_template(input_template)
  # pylint: disable=g-import-not-at-top
  from irl_lm.data import tasks
  from irl_lm.data import vocabularies
  return tasks.add_in_memory_task(
      name, load_split=functools.lru_cache(None)(
          functools.partial(load_split, data_dir=data_dir, input_template=input_template)),
      splits=SPLITS, inputs_key="inputs", targets_key="targets",
      vocabulary=vocabularies.paper_vocabulary(vocabulary_path), metric=OPENAI_SPEC.metric,
      replace=replace, train_examples=train_examples)


SPEC = spec.TaskSpec(name=TASK, metric="rouge", register=register_tfds, needs_seqio=True)
OPENAI_SPEC = spec.TaskSpec(name=OPENAI_TASK, metric="rouge", register=register_openai)


def tldr_task(name: str = TASK, tfds_data_dir: Optional[str] = None,
              vocabulary_path: Optional[str] = None,
              train_examples: Optional[int] = None) -> str:
  """Gin factory: TL;DR on TFDS ``reddit_tifu/long_split`` (``tfds build reddit_tifu/long_split``).

  Args:
    name: the task name to register.
    tfds_data_dir: TFDS data directory (default TFDS's).
    vocabulary_path: T5's SentencePiece model (default its public GCS copy).
    train_examples: train on the first N train examples (default: all).

  Returns:
    `name`, for ``train.task``.
  """
  return spec.configure(SPEC, name, tfds_data_dir=tfds_data_dir,
                        vocabulary_path=vocabulary_path, train_examples=train_examples)


def tldr_openai_task(name: str = OPENAI_TASK, data_dir: Optional[str] = None,
                     input_template: Optional[str] = None,
                     vocabulary_path: Optional[str] = None,
                     train_examples: Optional[int] = None) -> str:
  """Gin factory: TL;DR on the OpenAI JSON lines ``{train,valid,test}.jsonl``.

  Args:
    name: the task name to register.
    data_dir: folder of the three files (default ``<data root>/tldr``).
    input_template: e.g. ``'summarize: {title} {post}'`` (default ``'summarize: {post}'``).
    vocabulary_path: T5's SentencePiece model.
    train_examples: train on a fixed subset of N examples (default: all).

  Returns:
    `name`, for ``train.task``.
  """
  return spec.configure(OPENAI_SPEC, name, data_dir=data_dir, input_template=input_template,
                        vocabulary_path=vocabulary_path, train_examples=train_examples)
