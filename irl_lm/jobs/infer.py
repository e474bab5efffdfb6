r"""Inference mode: decode an input file with the newest checkpoint of a training run.

  python -m irl_lm.main --gin_file=gin/iqlearn_tiny.gin \
      --gin_bindings="run.mode = 'infer'" --gin_bindings="infer.input_file = 'inputs.jsonl'"

The run directory is the training run's (found from the same gin files: `run.*` and `infer.*`
bindings do not change it, see `jobs._config_fingerprint`). The model, task, feature lengths,
optimiser and mesh come from the `train` bindings, so the train state is rebuilt exactly as in
training (`state.build_state_layout`) and restored with `checkpoints.Checkpointer`.

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

Decoding (`DecodingConfig`, default: the training run's `train.decoding`): bind a scoped one so the
run directory stays the training run's, e.g.
  --gin_bindings="infer.decoding = @infer/DecodingConfig()"
  --gin_bindings="infer/DecodingConfig.method = 'sample'"
  --gin_bindings="infer/DecodingConfig.temperature = 0.7"
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from irl_lm import decoding as decoding_lib
from irl_lm.evaluation import evaluator
from irl_lm.checkpoints import manager as checkpoints_lib
from irl_lm.training import state as state_lib
from irl_lm.partitioning import Partitioner

INPUT_FIELDS = ("input", "inputs")
EOS_ID = evaluator.EOS_ID
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


class InferenceError(ValueError):
  """An input file (or inference setting) that cannot be used; the message says how to fix it."""


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
    InferenceError: missing file, unknown format, a malformed line, or no inputs at all.
  """
  if not os.path.isfile(path):
    raise InferenceError(
        f"input file {path} not found: pass an existing file with "
        "--gin_bindings=\"infer.input_file = '...'\" (JSON lines with an \"input\" field, or "
        "plain text with one input a line).")
  if input_format not in ("auto", "jsonl", "text"):
    raise InferenceError(f"unknown infer.input_format '{input_format}': use auto, jsonl or text.")
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
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
      raise InferenceError(f"line {number} of {path} is not valid JSON ({e.msg}): write one JSON "
                           "object per line, or use a plain-text file (.txt).") from e
    field = next((k for k in INPUT_FIELDS if isinstance(record, dict) and k in record), None)
    if field is None or not isinstance(record[field], str):
      raise InferenceError(f"line {number} of {path} has no string \"input\" (or \"inputs\") "
                           "field: write each line as {\"input\": \"...\"}.")
    extra = {k: v for k, v in record.items() if k not in INPUT_FIELDS}
    records.append({**extra, "input": record[field]})
  if not records:
    raise InferenceError(f"input file {path} holds no inputs: write one input a line.")
  return records


def _is_json_object(line: str) -> bool:
  try:
    return isinstance(json.loads(line), dict)
  except json.JSONDecodeError:
    return False


def encode_inputs(texts: Sequence[str], vocabulary: Any, length: int,
                  prefix: str = "") -> tuple[np.ndarray, np.ndarray]:
  """Tokenises inputs as the training pipeline does (trim to length - 1, then EOS, then pad).

  Args:
    texts: N input strings.
    vocabulary: a seqio vocabulary (`encode(str) -> list[int]`).
    length: L, the encoder length (`feature_lengths['inputs']`).
    prefix: prepended to every text first (the task's prefix).

  Returns:
    (tokens int32 [N, L] with 0 padding, truncated bool [N]: True where tokens were cut).
  """
  tokens = np.zeros((len(texts), length), np.int32)
  truncated = np.zeros((len(texts),), bool)
  for row, text in enumerate(texts):
    ids = list(vocabulary.encode(prefix + text))
    truncated[row] = len(ids) > length - 1
    ids = ids[:length - 1] + [EOS_ID]
    tokens[row, :len(ids)] = ids
  return tokens, truncated


def task_input_prefix(task: Any) -> str:
  """The string a seqio task prepends to its inputs ('' if none).

  Recognises preprocessors bound as `functools.partial(fn, prefix='...')` (irl_lm.data.tasks).
  """
  for preprocessor in getattr(task, "preprocessors", ()):
    if isinstance(preprocessor, functools.partial):
      prefix = preprocessor.keywords.get("prefix")
      if isinstance(prefix, str):
        return prefix
  return ""


def restore_params(run_dir: str, *, model: Any, tx: Any, partitioner: Partitioner,
                   input_shapes: Mapping[str, Sequence[int]], step: Optional[int] = None,
                   seed: int = 0, objective: Any = None) -> tuple[Any, Any, int]:
  """Restores the parameters of a training run's checkpoint, laid out as in training.

  Args:
    run_dir: the training run directory (checkpoints under `<run_dir>/checkpoints`).
    model, tx, partitioner: the run's model, optimiser and mesh (the whole train state is
      rebuilt abstractly with `state.build_state_layout` and restored, then only the parameters
      are kept).
    input_shapes: {'encoder_input_tokens': (B, L), 'decoder_input_tokens': (B, T)}; only used to
      trace the model.
    step: checkpoint step (default: the newest).
    seed: the run's seed (only used to trace the initialiser; nothing is initialised).
    objective: the run's objective; online methods (GAIL) keep extra state in checkpoints.

  Returns:
    (params, param_shardings, step): sharded jax.Arrays, their NamedShardings, and the step.

  Raises:
    checkpoints.CheckpointError: no checkpoint in the run directory (the message says how to
      train one), or one that does not match the configuration.
  """
  directory = os.path.join(run_dir, "checkpoints")
  no_checkpoint = checkpoints_lib.CheckpointError(
      f"no checkpoint in {os.path.abspath(directory)}: train one first with the same gin files "
      "and bindings but without run.mode = 'infer' (python -m irl_lm.main --gin_file=...), or "
      "point at a trained run with --gin_bindings=\"run.run_dir = '...'\".")
  if not os.path.isdir(directory):  # Checkpointer would create it.
    raise no_checkpoint
  layout = state_lib.build_state_layout(model, tx, partitioner, input_shapes, seed,
                                        objective=objective)
  checkpointer = checkpoints_lib.Checkpointer(directory, async_save=False)
  try:
    if checkpointer.latest_step() is None:
      raise no_checkpoint
    restored = checkpointer.restore(layout.abstract, layout.shardings, step=step)
  finally:
    checkpointer.close()
  return restored.params, layout.param_shardings, int(restored.step)


def make_score_fn(model: Any, partitioner: Partitioner, param_shardings: Any):
  """A jitted teacher-forced scorer of decoded outputs.

  Returns:
    `(params, encoder_input_tokens [B, L], tokens [B, T]) -> float32 [B, T]`: log pi(y_t | y_<t, x)
    of each output token (float32, temperature 1), 0 after the first EOS.
  """
  def score(params, encoder_tokens, tokens):
    decoder_inputs = jnp.pad(tokens[:, :-1], ((0, 0), (1, 0)))
    # No decoder_target_tokens: a PAD (0) the sampler emitted mid-sequence must not be masked,
    # so that every position sees what the cached decoder saw.
    logits = model.logits(params, {"encoder_input_tokens": encoder_tokens,
                                   "decoder_input_tokens": decoder_inputs})
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1),
                               tokens[..., None], axis=-1)[..., 0]
    # Emitted tokens: up to and including the first EOS (or all T without EOS).
    after_eos = jnp.cumsum(tokens == EOS_ID, axis=1) - (tokens == EOS_ID) > 0
    return jnp.where(after_eos, 0.0, logp)

  batch = partitioner.batch_sharding()
  jitted = jax.jit(score, in_shardings=(param_shardings, batch, batch), out_shardings=batch)

  def run(params, encoder_tokens, tokens):
    with partitioner.activate():
      return jitted(params, encoder_tokens, tokens)
  return run


def _emitted_length(row: np.ndarray) -> int:
  eos = np.flatnonzero(row == EOS_ID)
  return int(eos[0]) + 1 if eos.size else len(row)


def decode_records(records: Sequence[dict[str, Any]], encoder_tokens: np.ndarray,
                   truncated: np.ndarray, *, decode_fn: Any, score_fn: Any, params: Any,
                   vocabulary: Any, batch_size: int, decoding: evaluator.DecodingConfig,
                   output_path: str, progress: bool = True) -> int:
  """Decodes every input in batches and writes one JSON line per input (see module docstring).

  Args:
    records: N dicts from `read_inputs`.
    encoder_tokens: int32 [N, L]; truncated: bool [N] (from `encode_inputs`).
    decode_fn: `(params, tokens [B, L], rng) -> tokens [B, T]` (`evaluator.make_decode_fn`).
    score_fn: from `make_score_fn`.
    params: the model parameters.
    vocabulary: decodes output ids to text.
    batch_size: B; the last batch is padded with all-PAD rows whose outputs are dropped.
    decoding: the settings (seed, and alpha for beam scores).
    output_path: the JSON-lines file written (overwritten).
    progress: show a tqdm progress bar (stderr).

  Returns:
    The number of output tokens emitted (EOS included), summed over inputs.
  """
  import tqdm  # only the CLI needs it

  rng = jax.random.PRNGKey(decoding.seed)
  emitted = 0
  bar = tqdm.tqdm(total=len(records), unit="input", desc="infer",
                  disable=not progress or jax.process_index() != 0)
  with open(output_path, "w", encoding="utf-8") as out:
    for index, start in enumerate(range(0, len(records), batch_size)):
      chunk = encoder_tokens[start:start + batch_size]
      padded = np.zeros((batch_size,) + chunk.shape[1:], np.int32)
      padded[:len(chunk)] = chunk
      tokens = decode_fn(params, padded, jax.random.fold_in(rng, index))
      log_probs = score_fn(params, padded, tokens)
      tokens, log_probs = (np.asarray(x)[:len(chunk)] for x in jax.device_get((tokens,
                                                                               log_probs)))
      for row in range(len(chunk)):
        length = _emitted_length(tokens[row])
        ids = evaluator.strip_after_eos(tokens[row])
        result = {**records[start + row], "output": vocabulary.decode(ids), "tokens": ids,
                  "length": length, "log_prob": float(log_probs[row].sum()),
                  "truncated": bool(truncated[start + row])}
        if decoding.method == "beam":
          penalty = float(decoding_lib.length_penalty(length, decoding.alpha))
          result["score"] = result["log_prob"] / penalty
        emitted += length
        if jax.process_index() == 0:
          out.write(json.dumps(result, ensure_ascii=False) + "\n")
      out.flush()
      bar.update(len(chunk))
  bar.close()
  return emitted


def training_settings_from_gin() -> dict[str, Any]:
  """The `train` job's arguments as gin binds them, over `trainer.train`'s defaults.

  Returns:
    {'model', 'task', 'feature_lengths', 'batch_size', 'optimizer', 'schedule',
     'num_train_steps', 'partitioner', 'seed', 'decoding', ...}: what `trainer.train` would be
    called with (gin references resolved), so other jobs rebuild the run's train state exactly.
  """
  import gin  # the job reads the gin configuration; the functions above do not.
  from irl_lm.training import trainer

  defaults = {name: p.default for name, p in inspect.signature(trainer.train).parameters.items()
              if p.default is not inspect.Parameter.empty}
  return {**defaults, **gin.get_bindings("train")}


def infer(run_dir: str, input_file: Optional[str] = None, output_file: Optional[str] = None, *,
          decoding: Optional[evaluator.DecodingConfig] = None,
          batch_size: Optional[int] = None, max_decode_length: Optional[int] = None,
          input_prefix: Optional[str] = None, input_format: str = "auto",
          checkpoint_step: Optional[int] = None, progress: bool = True,
          training: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
  """Decodes an input file with the newest checkpoint of a training run (`run.mode = 'infer'`).

  Args:
    run_dir: the training run directory (jobs.run passes the one the gin files name).
    input_file: JSON lines or plain text, see `read_inputs`.
    output_file: JSON lines written (default `<run_dir>/infer_<input name>_<decoding>.jsonl`).
    decoding: greedy / sample (temperature, top_k, top_p) / beam settings; default the run's
      `train.decoding` (what the end-of-training evaluation used).
    batch_size: inputs decoded at once (default the run's eval batch size, or its training batch
      size); lowered to the smallest multiple of the mesh's data axis that holds all inputs.
    max_decode_length: most output tokens (default `feature_lengths['targets']`).
    input_prefix: prepended to each input (default: the task's own prefix, e.g. 'summarize: ').
    input_format: 'auto', 'jsonl' or 'text'.
    checkpoint_step: restore this step instead of the newest.
    progress: show a progress bar.
    training: the training job's arguments (`model`, `task`, `feature_lengths`, `partitioner`,
      `optimizer`, `schedule`, `num_train_steps`, `seed`, `batch_size`, ... as `trainer.train`
      takes them); default: read from gin's `train` bindings.

  Returns:
    Summary {'output_file', 'num_inputs', 'num_truncated', 'checkpoint_step', 'decoding',
    'batch_size', 'output_tokens', 'seconds', 'tokens_per_second'}.

  Raises:
    InferenceError: no or unusable input file / settings.
    checkpoints.CheckpointError: no checkpoint in the run directory, or a mismatched one.
  """
  if input_file is None:
    raise InferenceError("no input file: pass one with --gin_bindings=\"infer.input_file = "
                         "'inputs.jsonl'\" (JSON lines with an \"input\" field, or plain text).")
  records = read_inputs(input_file, input_format)
  settings = dict(training_settings_from_gin() if training is None else training)
  if "model" not in settings or "task" not in settings or "feature_lengths" not in settings:
    raise InferenceError("the gin configuration does not define the trained model: use the gin "
                         "files the run was trained with (train.model, train.task, "
                         "train.feature_lengths).")
  model, task_name = settings["model"], settings["task"]
  lengths = dict(settings["feature_lengths"])
  decoding = decoding or settings.get("decoding") or evaluator.DecodingConfig()
  decoding.describe()  # validates the method
  partitioner = settings.get("partitioner") or Partitioner()
  max_decode_length = max_decode_length or lengths["targets"]
  if batch_size is None:
    batch_size = settings.get("eval_batch_size") or settings.get("batch_size") or 8
  data = partitioner.data_size
  batch_size = min(batch_size, -(-len(records) // data) * data)
  partitioner.check_batch_size(batch_size)

  schedule = settings.get("schedule")
  optimizer = settings.get("optimizer")
  if schedule is None or optimizer is None:
    raise InferenceError("the gin configuration lacks train.optimizer / train.schedule: use the "
                         "gin files the run was trained with.")
  tx = optimizer(schedule=schedule(total_steps=settings.get("num_train_steps")))
  input_shapes = {"encoder_input_tokens": (batch_size, lengths["inputs"]),
                  "decoder_input_tokens": (batch_size, max_decode_length)}
  params, param_shardings, step = restore_params(
      run_dir, model=model, tx=tx, partitioner=partitioner, input_shapes=input_shapes,
      step=checkpoint_step, seed=settings.get("seed", 0), objective=settings.get("objective"))

  from irl_lm.data import pipeline  # TensorFlow only when a task is needed.
  task = pipeline.get_task(task_name)
  prefix = task_input_prefix(task) if input_prefix is None else input_prefix
  encoder_tokens, truncated = encode_inputs(
      [r["input"] for r in records], task.output_features["inputs"].vocabulary,
      lengths["inputs"], prefix)
  if truncated.any():
    logging.warning("%d of %d inputs are longer than the encoder (%d tokens) and were cut.",
                    int(truncated.sum()), len(records), lengths["inputs"])

  if output_file is None:
    name = os.path.splitext(os.path.basename(input_file))[0]
    output_file = os.path.join(run_dir, f"infer_{name}_{decoding.describe()}.jsonl")
  if os.path.dirname(output_file):
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
  decode_fn = evaluator.make_decode_fn(model, decoding, max_decode_length=max_decode_length,
                                       partitioner=partitioner, param_shardings=param_shardings)
  score_fn = make_score_fn(model, partitioner, param_shardings)
  logging.info("decoding %d inputs from %s with checkpoint %d (%s, batch %d)", len(records),
               input_file, step, decoding.describe(), batch_size)
  start = time.time()
  emitted = decode_records(records, encoder_tokens, truncated, decode_fn=decode_fn,
                           score_fn=score_fn, params=params,
                           vocabulary=pipeline.get_vocabulary(task_name), batch_size=batch_size,
                           decoding=decoding, output_path=output_file, progress=progress)
  seconds = time.time() - start
  summary = {"output_file": os.path.abspath(output_file), "num_inputs": len(records),
             "num_truncated": int(truncated.sum()), "checkpoint_step": step,
             "decoding": decoding.describe(), "batch_size": batch_size,
             "output_tokens": emitted, "seconds": seconds,
             "tokens_per_second": emitted / max(seconds, 1e-9)}
  if jax.process_index() == 0:
    print(f"Wrote {len(records)} outputs ({decoding.describe()}, checkpoint {step}) to "
          f"{summary['output_file']} in {seconds:.1f} s (compilation included).")
  return summary
