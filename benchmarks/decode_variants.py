r"""Other ways to run a cached decode step, each against the current one in one process.

  python benchmarks/decode_variants.py                  # T5 1.1 small, B 8, 128 tokens
  python benchmarks/decode_variants.py --cases=tiny --rounds=5

What `decoding.temperature_sample` (temperature 1, EOS off) costs per decode step when
* the attention of a decode query over its cache (`MultiHeadAttention.attend_cached`, two
  batched products of one query row per (row, head)) is written another way:
  - `reduce`: broadcast-multiply and sum instead of the two products;
  - `split_batch2` / `split_batch8`: the same products on 2 / 8 slices of the rows, so that
    XLA's runtime can run independent slices on different threads;
  - `split_heads2`: the same on 2 slices of the heads;
* or the whole sampling program is compiled with other XLA CPU options
  (`jax.jit(...).lower(...).compile(compiler_options=...)`; the train step is not affected):
  - `no_ynn`: no YNNPACK fusions (Eigen products, XLA's own reductions);
  - `no_ynn_dots`: YNNPACK for reductions only;
  - `onednn_dots`, `xnn_dots`: dots through oneDNN / XNNPACK fusions;
  - `eigen_1_thread`: Eigen products on one thread;
  - `no_concurrency_scheduler`: XLA's default scheduler instead of the concurrency-optimised one.
`current_again` compiles the current code a second time: a control for how much two
executables of the same program differ. Each variant should draw the same tokens as the
current code (checked; a difference is printed, float rounding can flip a near-tie); the time
per decode step is (sampling - encoder set-up) / T, medians of interleaved rounds, and the
ratio is to the current code in the same run. None of these is used: none was faster
(README, "Performance and memory").
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from irl_lm import decoding, ops  # noqa: E402
from irl_lm.models import layers  # noqa: E402

_CURRENT_ATTEND = layers.MultiHeadAttention.attend_cached


def _mix(self: layers.MultiHeadAttention, out_BQHD: jax.Array) -> jax.Array:
  out = out_BQHD.reshape(out_BQHD.shape[:-2] + (self.num_heads * self.head_dim,))
  return layers.constrain(self.out(out), layers.EMBED_ACT)


def _attend_reduce(self, query, key, value, bias=None):
  """query [B, 1, H, D], key/value [B, H, K, D]: products as multiply + sum."""
  q_BH1D = jnp.swapaxes(query, 1, 2)
  logits_BH1K = (q_BH1D * key).sum(-1)[:, :, None, :] + bias.astype(jnp.float32)
  weights_BHK = ops.softmax(logits_BH1K)[:, :, 0, :]
  out_BHD = (weights_BHK[..., None] * value).sum(2)
  return _mix(self, out_BHD[:, None])


def _attend_split(axis: str, parts: int):
  def attend(self, query, key, value, bias=None):
    batch, heads = query.shape[0], query.shape[2]
    bias = jnp.broadcast_to(bias, (batch, heads) + bias.shape[2:])
    q_axis, kv_axis = (0, 0) if axis == "batch" else (2, 1)
    outs = []
    for q, k, v, b in zip(jnp.split(query, parts, q_axis), jnp.split(key, parts, kv_axis),
                          jnp.split(value, parts, kv_axis), jnp.split(bias, parts, kv_axis)):
      logits = jnp.einsum("bqhd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32) + b
      outs.append(jnp.einsum("bhqk,bhkd->bqhd", ops.softmax(logits), v))
    return _mix(self, jnp.concatenate(outs, q_axis))
  return attend


ATTENTION: dict[str, Callable[..., Any]] = {
    "reduce": _attend_reduce,
    "split_batch2": _attend_split("batch", 2),
    "split_batch8": _attend_split("batch", 8),
    "split_heads2": _attend_split("heads", 2),
}
COMPILER_OPTIONS: dict[str, dict[str, Any]] = {
    "no_ynn": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "no_ynn_dots": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"},
    "onednn_dots": {"xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    "xnn_dots": {"xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    "eigen_1_thread": {"xla_cpu_multi_thread_eigen": False},
    "no_concurrency_scheduler": {"xla_cpu_enable_concurrency_optimized_scheduler": False},
}


def compiled_sampler(model, params, prompts, key, steps: int, variant: str):
  """`temperature_sample` compiled with the variant's attention or compiler options."""
  layers.MultiHeadAttention.attend_cached = ATTENTION.get(variant, _CURRENT_ATTEND)
  try:
    lowered = jax.jit(functools.partial(decoding.temperature_sample, model,
                                        max_decode_length=steps, temperature=1.0, eos_id=-1)
                      ).lower(params, prompts, key)
  finally:
    layers.MultiHeadAttention.attend_cached = _CURRENT_ATTEND
  return lowered.compile(compiler_options=COMPILER_OPTIONS.get(variant, {}))


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="small")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--variants", default=",".join(
      ["current", "current_again", *ATTENTION, *COMPILER_OPTIONS]))
  args = parser.parse_args(argv)
  variants = args.variants.split(",")
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; float32; sampling with "
        f"temperature 1, EOS off")
  for name in args.cases.split(","):
    case = common.CASES[name]
    model = common.t5_model(case, jnp.float32)
    shapes = model.input_shapes(case.batch, {"inputs": case.inputs, "targets": case.targets})
    params = jax.jit(lambda r, m=model, s=shapes: m.init(r, s))(jax.random.key(0))
    prompts = jnp.asarray(common.synthetic_batch(case)["encoder_input_tokens"])
    key = jax.random.key(1)
    setup = jax.jit(lambda p, x, m=model, t=case.targets: m.init_decode_state(p, x, t))
    fns = {"encoder set-up": lambda: jax.block_until_ready(setup(params, prompts))}
    reference, same = None, {}
    print(f"\n{case.name}: T5 1.1 {case.size}, B={case.batch}, L={case.inputs}, "
          f"T={case.targets}, V={case.vocab}")
    for variant in ["current"] + [v for v in variants if v != "current"]:
      sampler = compiled_sampler(model, params, prompts, key, case.targets, variant)
      tokens = np.asarray(sampler(params, prompts, key).tokens)
      reference = tokens if reference is None else reference
      same[variant] = np.array_equal(tokens, reference)
      fns[variant] = lambda s=sampler: jax.block_until_ready(s(params, prompts, key).tokens)
    times = common.interleaved_medians(fns, args.rounds)
    setup_s = times.pop("encoder set-up")["median"]
    step = {v: (t["median"] - setup_s) / case.targets for v, t in times.items()}
    print(f"  encoder set-up {setup_s * 1e3:.0f} ms (once per call)")
    for variant, seconds in step.items():
      print(f"  {variant:26} {seconds * 1e3:7.2f} ms per decode step  "
            f"{seconds / step['current']:.2f}x the current code"
            f"{'' if same[variant] else ' (other tokens: float rounding changed a draw)'}")
    print(f"  (medians of {args.rounds} interleaved rounds after a warm-up)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
