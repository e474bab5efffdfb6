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
"""
from __future__ import annotations

import os
import string
from typing import Optional

import tensorflow as tf

from irl_lm.data import sources

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


def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None, *,
               data_dir: Optional[str] = None,
               input_template: str = DEFAULT_INPUT_TEMPLATE) -> tf.data.Dataset:
  """seqio dataset function: ``{'inputs', 'targets', 'id'}`` string examples.

  Args:
    split: see :func:`load_split`.
    shuffle_files: fully shuffle the split (seeded).
    seed: shuffle seed.
    data_dir, input_template: see :func:`load_split`.

  Returns:
    A ``tf.data.Dataset`` of dicts of scalar tf.string tensors.
  """
  examples = load_split(split, data_dir, input_template)
  return sources.examples_dataset(examples, ("inputs", "targets", "id"), shuffle_files, seed)
