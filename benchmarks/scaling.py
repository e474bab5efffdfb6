r"""How train-step and sampling time grow with the work, against what the FLOP count predicts.

  python -m benchmarks scaling --out=benchmarks/scaling.png          # about 15 min on 2 cores
  python -m benchmarks scaling --quick --out=/tmp/scaling.png         # tiny sweeps, a minute

Four sweeps from a base shape (T5 1.1 tiny, B=8, L=128, T=32, V=4096 unless --size): batch B,
input length L, target length T, and model size (tiny -> small -> base at the base shape).
For each point: the median MLE + AdamW train-step time and the median time to sample T tokens
(`decoding.temperature_sample`, EOS disabled), and the analytic train FLOPs
(`roofline.train_flops`). Printed per sweep: the log-log slope of measured time against the
swept quantity, and the slope the FLOP count predicts; the PNG draws time against the swept
quantity on log-log axes with the FLOP prediction scaled through the first point.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys

import jax
import numpy as np

from benchmarks import common
from benchmarks import roofline

from irl_lm import decoding
from irl_lm.training import objectives


def measure(case: common.Case, rounds: int) -> dict[str, float]:
  built = common.t5_train_step(case, objectives.MLE(), optimizer="adamw")
  sample = jax.jit(functools.partial(decoding.temperature_sample, built["model"],
                                     max_decode_length=case.targets, temperature=1.0,
                                     eos_id=-1))
  params, enc = built["params"], built["batch"]["encoder_input_tokens"]
  times = common.interleaved_medians({
      "train": built["run"],
      "sample": lambda: jax.block_until_ready(sample(params, enc, jax.random.key(0)).tokens)},
      rounds)
  return {"train": times["train"]["median"], "sample": times["sample"]["median"],
          "flops": roofline.train_flops(built["model"].config, case.batch, case.inputs,
                                        case.targets)}


def slope(x, y) -> float:
  return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="benchmarks/scaling.png")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--quick", action="store_true", help="two points per sweep, no 'base'")
  args = parser.parse_args(argv)
  base = common.Case("base", "tiny", batch=8, inputs=128, targets=32, vocab=4096)
  sweeps = {
      "batch B": ("batch", [4, 8, 16, 32] if not args.quick else [4, 8]),
      "input length L": ("inputs", [64, 128, 256, 512] if not args.quick else [64, 128]),
      "target length T": ("targets", [16, 32, 64, 128] if not args.quick else [16, 32]),
      "model size": ("size", ["tiny", "small", "base"] if not args.quick else ["tiny", "small"]),
  }
  print(f"jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"float32; MLE + AdamW; base shape B=8, L=128, T=32, V=4096; medians of {args.rounds}")
  results = {}
  for title, (field, values) in sweeps.items():
    points = []
    for value in values:
      case = dataclasses.replace(base, **{field: value})
      points.append(measure(case, args.rounds))
      print(f"  {title} = {value}: train {points[-1]['train'] * 1e3:.0f} ms, sample "
            f"{points[-1]['sample'] * 1e3:.0f} ms, {points[-1]['flops'] / 1e9:.1f} GFLOP",
            flush=True)
    x = ([p["flops"] for p in points] if field == "size" else values)
    results[title] = (x, points)
    flops = [p["flops"] for p in points]
    print(f"  {title}: train-time slope {slope(x, [p['train'] for p in points]):.2f}, sampling "
          f"slope {slope(x, [p['sample'] for p in points]):.2f}; FLOP-count slope "
          f"{slope(x, flops):.2f}" + (" (x = train FLOPs)" if field == "size" else ""),
          flush=True)

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 4, figsize=(16, 4))
  for ax, (title, (x, points)) in zip(axes, results.items()):
    train = np.array([p["train"] for p in points])
    sample = np.array([p["sample"] for p in points])
    flops = np.array([p["flops"] for p in points])
    ax.loglog(x, train, "o-", label=f"train step (slope {slope(x, train):.2f})")
    ax.loglog(x, sample, "s-", label=f"sample T tokens (slope {slope(x, sample):.2f})")
    ax.loglog(x, train[0] * flops / flops[0], "k--",
              label=f"FLOP count (slope {slope(x, flops):.2f})")
    ax.set_xlabel("train FLOPs (tiny, small, base)" if title == "model size" else title)
    ax.set_ylabel("seconds")
    ax.set_title(f"T5 1.1, scaling {title}")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(args.out, dpi=110)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
