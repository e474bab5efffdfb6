"""XSum summarisation on TFDS ``xsum:1.1.0`` (needs a manual download).

Task ``xsum`` (metric family ``rouge``): ``inputs = 'summarize: ' + document``,
``targets = summary`` as in T5, T5's vocabulary, splits train/validation/test; gin:
``train.task = @xsum_task()``. Registering it touches neither the network nor the file system;
the data source is read-only, so a missing data set fails (with :data:`MANUAL_DOWNLOAD_HINT`)
instead of triggering a download. ``train_examples`` = N trains on the first N examples in
TFDS's stored order (TFDS shuffles examples once when it builds the data set), the paper's
"XSUM subsets": the same N for every run and seed, and smaller subsets nest in larger ones.

Importing this module imports neither TensorFlow nor seqio.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from irl_lm.data import spec
from irl_lm.data import vocabularies

if TYPE_CHECKING:  # pragma: no cover
  import seqio

TASK = "xsum"
TFDS_NAME = "xsum:1.1.0"
# What to download and where ({data_dir}: the TFDS data directory the task reads); the
# pipeline's MissingDatasetError quotes it when the data set is not prepared.
MANUAL_DOWNLOAD_HINT = (
    "run the download and extraction scripts of https://github.com/EdinburghNLP/XSum/"
    "blob/master/XSum-Dataset/README.md#running-the-download-and-extraction-scripts, "
    "pack the resulting folder with `tar czf xsum-extracts-from-downloads.tar.gz "
    "xsum-extracts-from-downloads`, put that file in {data_dir}/downloads/manual/ and "
    "run `tfds build xsum --data_dir {data_dir}` (which also fetches XSum's split list "
    "from GitHub)")


def register(name: str = TASK, *, tfds_data_dir: Optional[str] = None,
             vocabulary_path: str = vocabularies.T5_VOCAB_PATH,
             train_examples: Optional[int] = None, replace: bool = False) -> "seqio.Task":
  """Registers the XSum task on TFDS ``xsum:1.1.0`` (unless `name` is registered already).

  Args:
    name: task name.
    tfds_data_dir: TFDS data directory (default: TFDS's, ``~/tensorflow_datasets``).
    vocabulary_path: T5 SentencePiece model (default: the public GCS copy, read lazily), or a
      Hugging Face tokenizer.json or checkpoint directory (an imported decoder-only model's).
    train_examples: read only the first N train examples (TFDS's ``train[:N]``; None: all).
    replace: re-register a task already registered under `name`.

  Returns:
    The registered ``seqio.Task``; nothing is read until a dataset is requested.
  """
  from irl_lm.data import seqio_tasks  # pylint: disable=g-import-not-at-top  (TensorFlow)
  source = seqio_tasks.tfds_source(TFDS_NAME, tfds_data_dir=tfds_data_dir,
                                   train_examples=train_examples)
  return seqio_tasks.add_task(
      name, source=source,
      preprocessors=[seqio_tasks.rekey(inputs="document", targets="summary"),
                     seqio_tasks.prefix(seqio_tasks.T5_SUMMARIZE_PREFIX)],
      vocabulary=seqio_tasks.t5_vocabulary(vocabulary_path), metric=SPEC.metric, replace=replace)


SPEC = spec.TaskSpec(name=TASK, metric="rouge", register=register, needs_seqio=True)


def xsum_task(name: str = TASK, tfds_data_dir: Optional[str] = None,
              vocabulary_path: Optional[str] = None,
              train_examples: Optional[int] = None) -> str:
  """Gin factory: XSum on TFDS ``xsum:1.1.0`` (manual download, see the README).

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
