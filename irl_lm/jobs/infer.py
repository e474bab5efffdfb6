r"""Inference mode: decode an input file with the newest checkpoint of a training run.

  python -m irl_lm.main --gin_file=gin/iqlearn_tiny.gin \
      --gin_bindings="run.mode = 'infer'" --gin_bindings="infer.input_file = 'inputs.jsonl'"

The run directory is the training run's (found from the same gin files: `run.*` and `infer.*`
bindings do not change it, see `irl_lm.runner`). The model, task, feature lengths, optimiser
and mesh come from the training run's settings, so the train state is rebuilt exactly as in
training and restored (`irl_lm.jobs.common.restore_run`).

Input: JSON lines with an "input" (or "inputs") string field per line, other fields are copied
to the output; or plain text, one input a line (blank lines skipped). Each input gets the task's
input prefix (e.g. xsum's 'summarize: '; `infer.input_prefix` overrides it), is tokenised with the
task's vocabulary, cut to `feature_lengths['inputs'] - 1` tokens and ends with EOS, as in training.

Output: JSON lines, one per input, in input order:
  {"input": str, "output": str, "tokens": [int] (before EOS), "length": int (emitted tokens,
   EOS included), "log_prob": float (sum of log pi over the emitted tokens, under the model at
   temperature 1 without filtering), "score": float (beam search only: log_prob divided by
   ((5 + length) / 6) ** alpha), "truncated": bool (input longer than the encoder), ...extra
   input fields}.

Decoding (`DecodingConfig`, default: the training run's `EvalSettings.decoding`): bind a scoped one
so the run directory stays the training run's, e.g.
  --gin_bindings="infer.decoding = @infer/DecodingConfig()"
  --gin_bindings="infer/DecodingConfig.method = 'sample'"
  --gin_bindings="infer/DecodingConfig.temperature = 0.7"
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np
from absl import logging

from irl_lm.decoding import search
from irl_lm.decoding.config import DecodingConfig, make_decode_fn
from irl_lm.evaluation import predict
from irl_lm.evaluation import rewards as rewards_lib
from irl_lm.jobs import common
from irl_lm.models.base import EOS_ID, PROMPT_PAD_ID
from irl_lm.training import settings as settings_lib
from irl_lm.training.settings import RunSettings

INPUT_FIELDS = ("input", "inputs")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")




def read_inputs(path: str, input_format: str = "auto") -> list[dict[str, Any]]:
  """Reads the inputs to decode.

  Args:
    path: a JSON-lines file (each line an object with a string "input" or "inputs" field) or a
      plain-text file (one input a line; blank lines are skipped).
    input_format: 'jsonl', 'text' or 'auto' (JSON lines for .jsonl/.json/.ndjson files, text for
      .txt, otherwise JSON lines if the first non-blank line is a JSON object).

  Returns:
    One dict per input, in file order: {'input': str, **other fields of a JSON-lines record}.

  Raises:
    common.JobError: missing file, unknown format, a malformed line, or no inputs at all.
  """
  if not os.path.isfile(path):
    raise common.JobError(
        f"input file {path} not found: pass an existing file with "
        "--gin_bindings=\"infer.input_file = '...'\" (JSON lines with an \"input\" field, or "
        "plain text with one input a line).")
  if input_format not in ("auto", "jsonl", "text"):
    raise common.JobError(f"unknown infer.input_format '{input_format}': use auto, jsonl or text.")
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8-sig")  # a UTF-8 byte-order mark is dropped
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise common.JobError(
        f"line {line} of input file {path} is not UTF-8 text (byte "
        f"0x{data[e.start]:02x} at offset {e.start}): pass a UTF-8 text or JSON-lines file with "
        "--gin_bindings=\"infer.input_file = '...'\".") from None
  lines = text.splitlines()
  if input_format == "auto":
    suffix = os.path.splitext(path)[1].lower()
    if suffix in JSON_SUFFIXES:
      input_format = "jsonl"
    elif suffix == ".txt":
      input_format = "text"
    else:
      first = next((l for l in lines if l.strip()), "")
      input_format = "jsonl" if _is_json_object(first) else "text"
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    if input_format == "text":
      records.append({"input": line})
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise common.JobError(f"line {number} of {path} is not valid JSON ({e.msg}): write one JSON "
                           "object per line, or use a plain-text file (.txt).") from e
    field = next((k for k in INPUT_FIELDS if isinstance(record, dict) and k in record), None)
    if field is None or not isinstance(record[field], str):
      raise common.JobError(f"line {number} of {path} has no string \"input\" (or \"inputs\") "
                           "field: write each line as {\"input\": \"...\"}.")
    extra = {k: v for k, v in record.items() if k not in INPUT_FIELDS}
    records.append({**extra, "input": record[field]})
  if not records:
    raise common.JobError(f"input file {path} holds no inputs: write one input a line.")
  return records


def _is_json_object(line: str) -> bool:
  try:
    return isinstance(json.loads(line), dict)
  except json.JSONDecodeError:
    return False


def encode_inputs(texts: Sequence[str], vocabulary: Any, length: int, prefix: str = "", *,
                  eos_id: int = EOS_ID) -> tuple[np.ndarray, np.ndarray]:
  """Tokenises inputs as the training pipeline does (trim to length - 1, then EOS, then pad).

  Args:
    texts: N input strings.
    vocabulary: a seqio vocabulary (`encode(str) -> list[int]`).
    length: L, the input length (`feature_lengths['inputs']`).
    prefix: prepended to every text first (the task's prefix).
    eos_id: the model's end-of-sequence id.

  Returns:
    (tokens int32 [N, L] right-padded with `PROMPT_PAD_ID`, truncated bool [N]: True where
    tokens were cut).
  """
  tokens = np.full((len(texts), length), PROMPT_PAD_ID, np.int32)
  truncated = np.zeros((len(texts),), bool)
  for row, text in enumerate(texts):
    ids = list(vocabulary.encode(prefix + text))
    truncated[row] = len(ids) > length - 1
    ids = ids[:length - 1] + [eos_id]
    tokens[row, :len(ids)] = ids
  return tokens, truncated


def task_input_prefix(task: Any) -> str:
  """The string a seqio task prepends to its inputs ('' if none).

  Reads an in-memory task's `input_prefix`, and recognises seqio preprocessors bound as
  `functools.partial(fn, prefix='...')` (irl_lm.data).
  """
  if isinstance(getattr(task, "input_prefix", None), str):
    return task.input_prefix
  for preprocessor in getattr(task, "preprocessors", ()):
    if isinstance(preprocessor, functools.partial):
      prefix = preprocessor.keywords.get("prefix")
      if isinstance(prefix, str):
        return prefix
  return ""


@dataclasses.dataclass(frozen=True)
class InferSettings:
  """What infer mode decodes and how (gin: `infer.*`).

  Attributes:
    input_file: JSON lines or plain text, see `read_inputs`.
    output_file: JSON lines written (default `<run_dir>/infer_<input name>_<decoding>.jsonl`).
    decoding: greedy / sample (temperature, top_k, top_p) / beam settings; default the run's
      `EvalSettings.decoding` (what the end-of-training evaluation used).
    batch_size: inputs decoded at once (default the run's eval batch size, or its training batch
      size); lowered to the smallest multiple of the mesh's data axis that holds all inputs.
    max_decode_length: most output tokens (default `feature_lengths['targets']`).
    input_prefix: prepended to each input (default: the task's own prefix, e.g. 'summarize: ').
    input_format: 'auto', 'jsonl' or 'text'.
    checkpoint_step: restore this step instead of the newest.
    progress: show a progress bar.
  """
  input_file: Optional[str] = None
  output_file: Optional[str] = None
  decoding: Optional[DecodingConfig] = None
  batch_size: Optional[int] = None
  max_decode_length: Optional[int] = None
  input_prefix: Optional[str] = None
  input_format: str = "auto"
  checkpoint_step: Optional[int] = None
  progress: bool = True


def infer(run_dir: str, options: InferSettings, training: RunSettings) -> dict[str, Any]:
  """Decodes an input file with the newest checkpoint of a training run (`run.mode = 'infer'`).

  Args:
    run_dir: the training run directory (the runner passes the one the gin files name).
    options: the input, output and decoding (`InferSettings`).
    training: the training run's settings (model, task, feature lengths, mesh, optimiser, ...).

  Returns:
    Summary {'output_file', 'num_inputs', 'num_truncated', 'checkpoint_step', 'decoding',
    'batch_size', 'output_tokens', 'seconds', 'tokens_per_second'}.

  Raises:
    common.JobError: no or unusable input file.
    errors.SettingError: unusable settings.
    checkpoints.CheckpointError: no checkpoint in the run directory, or a mismatched one.
  """
  input_file = options.input_file
  if input_file is None:
    raise common.JobError("no input file: pass one with --gin_bindings=\"infer.input_file = "
                         "'inputs.jsonl'\" (JSON lines with an \"input\" field, or plain text).")
  records = read_inputs(input_file, options.input_format)
  run = training.require()
  common.require_checkpoint(run_dir, "infer")
  task_name, lengths = run.task, dict(run.feature_lengths)
  decoding = options.decoding or run.evaluation.decoding
  settings_lib.check_decoding(decoding, "infer.decoding")
  max_decode_length = options.max_decode_length or lengths["targets"]
  restored = common.restore_run(run_dir, run, rows=len(records), batch_size=options.batch_size,
                                checkpoint_step=options.checkpoint_step,
                                max_decode_length=max_decode_length)
  model, params = restored.model, restored.params

  from irl_lm.data import pipeline  # TensorFlow only when a task is needed.
  task = pipeline.get_task(task_name)
  vocabulary = pipeline.get_vocabulary(task_name)
  prefix = (task_input_prefix(task) if options.input_prefix is None else
            options.input_prefix)
  prompts, truncated = encode_inputs([r["input"] for r in records],
                                     task.output_features["inputs"].vocabulary,
                                     lengths["inputs"], prefix, eos_id=model.eos_id)
  if truncated.any():
    logging.warning("%d of %d inputs are longer than the input length (%d tokens) and were cut.",
                    int(truncated.sum()), len(records), lengths["inputs"])
  output_file = options.output_file
  if output_file is None:
    name = os.path.splitext(os.path.basename(input_file))[0]
    output_file = os.path.join(run_dir, f"infer_{name}_{decoding.describe()}.jsonl")
  if os.path.dirname(output_file):
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
  decode_fn = make_decode_fn(model, decoding, max_decode_length=max_decode_length,
                             partitioner=restored.partitioner,
                             param_shardings=restored.param_shardings, vocabulary=vocabulary)
  stats_fn = rewards_lib.make_statistics_fn(model, gamma=1.0, partitioner=restored.partitioner,
                                            param_shardings=restored.param_shardings)
  logging.info("decoding %d inputs from %s with checkpoint %d (%s, batch %d)", len(records),
               input_file, restored.step, decoding.describe(), restored.batch_size)
  start = time.time()
  emitted = _decode_to_file(records, prompts, truncated, decode_fn=decode_fn, stats_fn=stats_fn,
                            restored=restored, vocabulary=vocabulary, decoding=decoding,
                            output_path=output_file, progress=options.progress)
  seconds = time.time() - start
  summary = {"output_file": os.path.abspath(output_file), "num_inputs": len(records),
             "num_truncated": int(truncated.sum()), "checkpoint_step": restored.step,
             "decoding": decoding.describe(), "batch_size": restored.batch_size,
             "output_tokens": emitted, "seconds": seconds,
             "tokens_per_second": emitted / max(seconds, 1e-9)}
  if common.is_writer():
    print(f"Wrote {len(records)} outputs ({decoding.describe()}, checkpoint {restored.step}) to "
          f"{summary['output_file']} in {seconds:.1f} s (compilation included).")
  return summary


def _decode_to_file(records: Sequence[dict[str, Any]], prompts: np.ndarray,
                    truncated: np.ndarray, *, decode_fn: Any, stats_fn: Any,
                    restored: common.RestoredRun, vocabulary: Any, decoding: DecodingConfig,
                    output_path: str, progress: bool) -> int:
  """Decodes every input in batches (`predict.iterate_batches`, keys `predict.batch_keys`) and
  writes one JSON line per input as each batch finishes; returns the emitted tokens' count."""
  import tqdm  # only the CLI needs it

  params, model, batch_size = restored.params, restored.model, restored.batch_size
  key_of = predict.batch_keys(decoding.seed)
  emitted = 0
  bar = tqdm.tqdm(total=len(records), unit="input", desc="infer",
                  disable=not progress or not common.is_writer())
  with open(output_path, "w", encoding="utf-8") as out:
    for index, n, (batch,) in predict.iterate_batches([prompts], batch_size):
      tokens = decode_fn(params, batch, key_of(index))
      log_probs = stats_fn(params, batch, tokens)["log_prob"]
      tokens = np.asarray(jax.device_get(tokens))
      start = index * batch_size
      for row in range(n):
        length = predict.emitted_length(tokens[row], model.eos_id)
        ids = predict.output_ids(tokens[row], model.eos_id)
        result = {**records[start + row], "output": vocabulary.decode(ids), "tokens": ids,
                  "length": length, "log_prob": float(log_probs[row]),
                  "truncated": bool(truncated[start + row])}
        if decoding.method == "beam":
          result["score"] = result["log_prob"] / float(search.length_penalty(length,
                                                                             decoding.alpha))
        emitted += length
        if common.is_writer():
          out.write(json.dumps(result, ensure_ascii=False) + "\n")
      out.flush()
      bar.update(n)
  bar.close()
  return emitted
