r"""Where a train step's time goes: XLA's own per-operation trace of one step, summarised.

  python -m benchmarks op_profile                        # T5 1.1 small, MLE (B 8, L 512, T 128)
  python -m benchmarks op_profile --cases=tiny --objective=iqlearn --top=20
  python -m benchmarks op_profile --workload=sample     # one `temperature_sample` call instead

Traces one compiled MLE (or offline IQLearn) + AdamW step (float32) with `jax.profiler`, reads
the XPlane it writes (TensorFlow's `xplane_pb2`, already installed with TensorFlow) and sums
the time of every XLA operation over the runtime's worker threads, so the shares are of thread
time, not of wall time. Operations are grouped by what they do: matrix products (YNNPACK /
Eigen dots), copies and transposes (layout changes, mostly feeding the weight gradients),
element-wise / reduction fusions of the model and of the loss (over the [B, T, V] logits), the
optimiser update, and waiting. The `--top` most expensive operations are listed with their HLO
shape and the JAX operation they come from (`metadata.op_name`).

With `--workload=sample` the traced program is one `decoding.temperature_sample` call
(temperature 1, `case.targets` tokens, EOS off) on the case's batch, grouped into the encoder and
cache set-up, the decode steps' output layer, MLP, cross- and self-attention, other products,
drawing the token, and the rest.
"""
from __future__ import annotations

import argparse
import collections
import functools
import glob
import os
import re
import sys
import tempfile

import jax

from benchmarks import common

from irl_lm import decoding
from irl_lm.training import objectives


def _source_and_product(name: str, hlo_line: str) -> tuple[str, bool]:
  """(the JAX operation an XLA op comes from, '' if none; whether it is a matrix product)."""
  source = re.search(r'op_name="([^"]+)"', hlo_line)
  product = name.startswith(("ynn_fusion", "dot", "xnn_fusion", "onednn")) or " dot(" in hlo_line
  return (source.group(1) if source else ""), product


def _group(name: str, hlo_line: str) -> str:
  source, product = _source_and_product(name, hlo_line)
  if product:
    return "matrix products"
  if "SlinkyThreadPool" in name or "Await" in name:
    return "waiting for other threads"
  if name.startswith(("copy", "transpose")):
    return "copies and transposes"
  if "jvp(" not in source:
    return "optimiser update and the rest"
  if re.search(r"jvp\((T5Transformer|DecoderOnly)", source):
    return "element-wise / reductions in the model"
  return "element-wise / reductions in the loss (over the logits)"


def _sample_group(name: str, hlo_line: str) -> str:
  source, product = _source_and_product(name, hlo_line)
  if "SlinkyThreadPool" in name or "Await" in name:
    return "waiting for other threads"
  if "init_decode_state" in source:
    return "encoder and cache set-up (once)"
  if "logits_dense" in source:
    return "decode steps: output layer"
  if "mlp" in source:
    return "decode steps: MLP"
  if "encoder_decoder_attention" in source:
    return "decode steps: cross-attention"
  if "self_attention" in source:
    return "decode steps: self-attention"
  if product:
    return "decode steps: other products" + ("" if source else " (no source metadata)")
  if "_gumbel" in source or "_uniform" in source or "categorical" in source:
    return "drawing the token (noise, argmax)"
  return "the rest (norms, residuals, loop bookkeeping)"


def _op_times(trace_dir: str) -> collections.Counter:
  """{XLA operation name: total ms over the runtime's threads} from the trace in trace_dir."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  space = xplane_pb2.XSpace()
  with open(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
    space.ParseFromString(f.read())
  totals: collections.Counter = collections.Counter()
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):
        continue
      for event in line.events:
        name = names.get(event.metadata_id, "?")
        if not name.startswith("ThunkExecutor"):
          totals[name] += event.duration_ps / 1e9
  return totals


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="small")
  parser.add_argument("--objective", default="mle", choices=("mle", "iqlearn"))
  parser.add_argument("--top", type=int, default=12)
  parser.add_argument("--workload", default="step", choices=("step", "sample"))
  args = parser.parse_args(argv)
  objective = objectives.MLE() if args.objective == "mle" else objectives.IQLearn()
  group = _group if args.workload == "step" else _sample_group
  for name in args.cases.split(","):
    case = common.CASES[name]
    built = common.t5_train_step(case, objective, optimizer="adamw")
    run = built["run"]
    if args.workload == "sample":
      sample = jax.jit(functools.partial(decoding.temperature_sample, built["model"],
                                         max_decode_length=case.targets, temperature=1.0,
                                         eos_id=-1))
      sample_args = (built["params"], built["batch"]["encoder_input_tokens"], jax.random.key(0))
      run = lambda: jax.block_until_ready(sample(*sample_args).tokens)  # noqa: E731
    run()
    run()
    with tempfile.TemporaryDirectory() as trace_dir:
      with jax.profiler.trace(trace_dir):
        run()
      totals = _op_times(trace_dir)
    with built["partitioner"].activate():
      lowered = built["lowered"]() if args.workload == "step" else sample.lower(*sample_args)
      hlo = lowered.compile().as_text()
    lines = {m.group(2): m.group(0).strip()
             for m in re.finditer(r"^\s*(ROOT )?%?([\w.\-]+) = .*$", hlo, re.M)}
    groups: collections.Counter = collections.Counter()
    for op, ms in totals.items():
      groups[group(op, lines.get(op, ""))] += ms
    total = sum(groups.values())
    print(f"\n{case.name}: T5 1.1 {case.size}, B={case.batch}, L={case.inputs}, "
          f"T={case.targets}, V={case.vocab}, "
          f"{args.objective if args.workload == 'step' else 'sampling'}; "
          f"{total:.0f} ms of thread time "
          f"in XLA operations over {len(totals)} operations")
    for group, ms in groups.most_common():
      print(f"  {ms / total:6.1%}  {ms:8.0f} ms  {group}")
    print(f"  the {args.top} most expensive operations:")
    for op, ms in totals.most_common(args.top):
      line = lines.get(op, "")
      shape = re.search(r"= (\S+)", line)
      source = re.search(r'op_name="([^"]+)"', line)
      print(f"  {ms:8.0f} ms  {op:28} {shape.group(1) if shape else '':24} "
            f"{source.group(1)[-70:] if source else ''}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
