r"""How close a train step and sampling come to this machine's limits, measured in one run.

  python -m benchmarks roofline                 # T5 1.1 small (B 8, L 512, T 128) and tiny
  python -m benchmarks roofline --cases=tiny --rounds=5

Train step (MLE, AdamW, float32, a synthetic batch as `common.CASES`):
* model FLOPs counted analytically (`irl_lm.models.flops.train_flops`: matmuls only, 2 per
  multiply-add, backward = 2 x forward; what the trainer's MFU uses) and cross-checked with
  XLA's cost analysis of the compiled step (which also counts element-wise work, so it should
  be a little higher);
* achieved FLOP/s = analytic FLOPs / median step time, and its ratio to the FLOP/s of a large
  float32 matmul (N x N by N x N, `--matmul_n`) measured in the same run: the compute roofline.
Sampling (one cached decode step of the whole batch, T new tokens):
* bytes a step must read (`decode_step_bytes`: decoder weights, output layer, self- and cross-
  attention caches) / median time per step, against the memory bandwidth of a large float32
  reduction measured in the same run (decoding is memory-bound: few FLOPs per byte).
Floors of the sampling targets at the rates measured in the same run (float32): sampling
cannot take less than its prompt pass (encoder and cross-attention keys/values, analytic FLOPs)
at the matmul rate plus T decode steps' reads at the measured bandwidth (`sampling_floor_s`).
From it: the least sample / update ratio (both at their rooflines, and against the measured
update), the least online IQLearn (alpha = 0.1: ceil(0.1 B) sampled rows) / MLE step ratio, and
the time transformers' `generate` would need for "sampling >= 3x generate" to be reachable.
Medians of interleaved rounds (`common.interleaved_medians`), so load changes hit all alike.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import sys

import jax
import jax.numpy as jnp

from benchmarks import common

from irl_lm import decoding
from irl_lm.models import flops, t5
from irl_lm.training import objectives


def train_flops(cfg: t5.T5Config, batch: int, inputs: int, targets: int) -> float:
  """Forward + backward matmul FLOPs of one train step (`irl_lm.models.flops`, what the
  trainer's MFU uses)."""
  return flops.train_flops(cfg, batch, {"inputs": inputs, "targets": targets})


def decode_step_bytes(cfg: t5.T5Config, batch: int, inputs: int, max_length: int,
                      bytes_per_value: int = 4) -> float:
  """Bytes one cached decode step of the batch reads: the decoder's weights (self-attention,
  cross-attention query/output, MLP), the output layer, and per row the self-attention cache
  (all `max_length` slots: static shapes) and the cross-attention keys/values."""
  E, J, F, V = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
  weights = cfg.num_decoder_layers * (6 * E * J + 3 * E * F) + E * V
  caches = cfg.num_decoder_layers * 2 * batch * J * (max_length + inputs)
  return float(bytes_per_value * (weights + caches))


def sampling_floor_s(cfg: t5.T5Config, rows: int, inputs: int, max_length: int,
                     flop_rate: float, bandwidth: float) -> float:
  """Least seconds sampling `max_length` tokens for `rows` rows can take at `flop_rate` FLOP/s
  and `bandwidth` bytes/s: the prompt pass (encoder, cross keys/values) at the matmul rate
  plus every decode step's reads (`decode_step_bytes`) at the bandwidth."""
  prompt_flops = flops.forward_flops(cfg, rows, {"inputs": inputs, "targets": 0})
  return (prompt_flops / flop_rate
          + max_length * decode_step_bytes(cfg, rows, inputs, max_length) / bandwidth)


def matmul_fn(n: int):
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(jnp.dot)
  return lambda: jax.block_until_ready(f(a, b)), 2.0 * n ** 3


def bandwidth_fn(num_values: int):
  x = jnp.ones((num_values,), jnp.float32)
  f = jax.jit(jnp.sum)
  return lambda: jax.block_until_ready(f(x)), 4.0 * num_values


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="small,tiny")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--matmul_n", type=int, default=2048)
  parser.add_argument("--bandwidth_mb", type=int, default=1024)
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"float32; MLE + AdamW")
  for name in args.cases.split(","):
    case = common.CASES[name]
    built = common.t5_train_step(case, objectives.MLE(), optimizer="adamw")
    cfg = built["model"].config
    sample = jax.jit(functools.partial(decoding.temperature_sample, built["model"],
                                       max_decode_length=case.targets, temperature=1.0,
                                       eos_id=-1))
    params, enc = built["params"], built["batch"]["encoder_input_tokens"]
    key = jax.random.key(0)
    matmul, matmul_flops = matmul_fn(args.matmul_n)
    reduce, reduce_bytes = bandwidth_fn(args.bandwidth_mb * 2 ** 20 // 4)
    times = common.interleaved_medians({
        "train": built["run"],
        "sample": lambda: jax.block_until_ready(sample(params, enc, key).tokens),
        "matmul": matmul, "reduce": reduce}, args.rounds)
    with built["partitioner"].activate():
      xla = common.cost_analysis(built["lowered"]().compile())
    analytic = train_flops(cfg, case.batch, case.inputs, case.targets)
    peak_flops = matmul_flops / times["matmul"]["median"]
    achieved = analytic / times["train"]["median"]
    bandwidth = reduce_bytes / times["reduce"]["median"]
    step_s = times["sample"]["median"] / case.targets
    step_bytes = decode_step_bytes(cfg, case.batch, case.inputs, case.targets)
    print(f"\n{case.name}: T5 1.1 {case.size}, B={case.batch}, L={case.inputs}, "
          f"T={case.targets}, V={case.vocab}")
    print(f"  train step: {analytic / 1e9:.1f} GFLOP analytic, {xla['flops'] / 1e9:.1f} GFLOP by "
          f"XLA (ratio {xla['flops'] / analytic:.2f}); {times['train']['median'] * 1e3:.0f} ms "
          f"-> {achieved / 1e9:.0f} GFLOP/s")
    print(f"  float32 matmul {args.matmul_n}^3: {peak_flops / 1e9:.0f} GFLOP/s; train step "
          f"reaches {achieved / peak_flops:.0%} of it (target >= 70%)")
    print(f"  sampling: {step_s * 1e3:.1f} ms per decode step of the batch, "
          f"{step_bytes / 2 ** 20:.0f} MiB read per step -> {step_bytes / step_s / 1e9:.1f} GB/s; "
          f"measured bandwidth ({args.bandwidth_mb} MiB sum) {bandwidth / 1e9:.1f} GB/s: "
          f"{step_bytes / step_s / bandwidth:.0%} of it")
    floor = sampling_floor_s(cfg, case.batch, case.inputs, case.targets, peak_flops, bandwidth)
    online_rows = math.ceil(0.1 * case.batch)
    online_floor = sampling_floor_s(cfg, online_rows, case.inputs, case.targets, peak_flops,
                                    bandwidth)
    train_floor = analytic / peak_flops
    print(f"  floors at these rates: sampling the batch >= {floor * 1e3:.0f} ms (prompt pass "
          f"at the matmul rate + {case.targets} steps at the bandwidth; ours "
          f"{times['sample']['median'] * 1e3:.0f} ms = {times['sample']['median'] / floor:.2f}x "
          f"it); sample / update >= {floor / train_floor:.2f} with both at their rooflines, "
          f">= {floor / times['train']['median']:.2f} against the measured update (target "
          f"<= 0.35); online (alpha 0.1, {online_rows} row(s)) / MLE >= "
          f"{1 + online_floor / train_floor:.2f} at the rooflines, >= "
          f"{1 + online_floor / times['train']['median']:.2f} against the measured update "
          f"(target <= 1.15); sampling >= 3x generate needs generate >= {3 * floor:.2f} s")
    print(f"  (medians of {args.rounds} interleaved rounds after a warm-up)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
