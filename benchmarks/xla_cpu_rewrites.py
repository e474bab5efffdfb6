r"""Before / after of the rewrites that XLA's CPU backend compiles better, from one run.

  python benchmarks/xla_cpu_rewrites.py                   # T5 1.1 small (the issue's shapes) + tiny
  python benchmarks/xla_cpu_rewrites.py --cases=tiny --rounds=9

* `layers.dot_last` (every `Dense` and the tied output layer): one 2-D product over the
  flattened rows. 'before' is `jnp.dot` on the [B, T, In] activations, whose weight gradient
  contracts two axes; XLA CPU then writes a transposed copy of each output gradient. Measured:
  the MLE + AdamW train step (float32), XLA's temporaries, median step time, first-step loss.
* `ops.softmax` (attention weights): `jax.nn.softmax`'s values with a backward pass that keeps
  only the output; 'before' is `jax.nn.softmax`, differentiated through exp, sum and divide
  (jax's `jax_softmax_custom_jvp` flag is off by default). Measured like the first.
* `ops.categorical` / `ops.argmax` (sampling, greedy decoding, the losses' accuracy): the same
  draws as `jax.random.categorical` / `jnp.argmax`, whose (value, index) reduction XLA CPU runs
  as a scalar loop with the Gumbel noise fused into it. Measured: `temperature_sample` of
  `case.targets` tokens at temperature 1 (tokens must be identical) and one draw alone on
  [B, V] logits.
* `ops.gumbel` (the noise of every draw): `jax.random.gumbel`'s values with the Threefry hash
  written out; 'before' is `jax.random.gumbel`, which jax lowers on CPU as a rolled loop.
  Measured like the sampling above (tokens must be identical).

'before' swaps the old function in while its program is traced; both programs run in the same
process, in interleaved rounds (`common.interleaved_medians`). Run with tcmalloc preloaded for
the numbers README quotes (`LD_PRELOAD=<tcmalloc>`, see `host_allocator.py`).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from irl_lm import decoding, ops  # noqa: E402
from irl_lm.models import layers  # noqa: E402
from irl_lm.training import objectives  # noqa: E402

_DOT_LAST, _ARGMAX, _CATEGORICAL, _SOFTMAX, _GUMBEL = (
    layers.dot_last, ops.argmax, ops.categorical, ops.softmax, ops.gumbel)


def _jnp_argmax(x, axis=-1, *, max_value=None):
  del max_value
  return jnp.argmax(x, axis=axis).astype(jnp.int32)


def _jax_categorical(key, logits, axis=-1):
  return jax.random.categorical(key, logits, axis=axis).astype(jnp.int32)


@contextlib.contextmanager
def before(which: str) -> Iterator[None]:
  """The pre-rewrite function(s) in place while a program is traced: 'dot', 'softmax',
  'sampling' or 'gumbel'."""
  if which == "dot":
    layers.dot_last = jnp.dot
  elif which == "softmax":
    ops.softmax = functools.partial(jax.nn.softmax, axis=-1)
  elif which == "gumbel":
    ops.gumbel = jax.random.gumbel
  else:
    ops.argmax, ops.categorical = _jnp_argmax, _jax_categorical
  try:
    yield
  finally:
    (layers.dot_last, ops.argmax, ops.categorical, ops.softmax,
     ops.gumbel) = _DOT_LAST, _ARGMAX, _CATEGORICAL, _SOFTMAX, _GUMBEL


def _line(title: str, times: dict[str, dict[str, float]], extra: str = "") -> None:
  b, a = times["before"]["median"], times["after"]["median"]
  print(f"  {title:40} {b * 1e3:8.1f} -> {a * 1e3:8.1f} ms ({a / b:.2f}x){extra}", flush=True)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="small,tiny")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--sampling_only", action="store_true",
                      help="skip the two train-step comparisons")
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"float32; medians of {args.rounds} interleaved rounds; before -> after (ratio); host "
        f"allocator {os.environ.get('LD_PRELOAD') or 'of the system'}")
  for name in args.cases.split(","):
    case = common.CASES[name]
    print(f"\n{case.name}: T5 1.1 {case.size}, B={case.batch}, L={case.inputs}, "
          f"T={case.targets}, V={case.vocab}")

    step_parts = () if args.sampling_only else (("dot", "Dense as a 2-D product"),
                                                ("softmax", "softmax keeping its output"))
    built = None
    for which, title in step_parts:
      steps, temps, losses = {}, {}, {}
      for label in ("before", "after"):
        with before(which) if label == "before" else contextlib.nullcontext():
          built = common.t5_train_step(case, objectives.MLE(), optimizer="adamw")
          losses[label] = float(built["run"]()["loss"])
          with built["partitioner"].activate():
            memory = built["lowered"]().compile().memory_analysis()
        temps[label] = memory.temp_size_in_bytes / 2**20
        steps[label] = built["run"]
      _line(f"train step, {title}", common.interleaved_medians(steps, args.rounds, warmup=False),
            f"; temporaries {temps['before']:.0f} -> {temps['after']:.0f} MB; first loss "
            f"{losses['before']:.6f} vs {losses['after']:.6f}")
      del steps

    if built is None:
      built = common.t5_train_step(case, objectives.MLE(), optimizer="adamw")
    params, prompts = built["params"], built["batch"]["encoder_input_tokens"]
    key = jax.random.key(0)
    for which, title in (("sampling", "all three vs jax's"), ("gumbel", "Gumbel noise alone")):
      samplers, tokens = {}, {}
      for label in ("before", "after"):
        with before(which) if label == "before" else contextlib.nullcontext():
          sample = jax.jit(functools.partial(decoding.temperature_sample, built["model"],
                                             max_decode_length=case.targets, temperature=1.0,
                                             eos_id=-1))
          tokens[label] = np.asarray(sample(params, prompts, key).tokens)
        samplers[label] = (lambda s: lambda: jax.block_until_ready(
            s(params, prompts, key).tokens))(sample)
      same = "identical" if np.array_equal(tokens["before"], tokens["after"]) else "DIFFERENT"
      _line(f"sampling {case.targets} tokens, {title}",
            common.interleaved_medians(samplers, args.rounds, warmup=False), f"; tokens {same}")

    logits = jnp.asarray(np.random.RandomState(0).randn(case.batch, case.vocab), jnp.float32)
    draws = {}
    for label in ("before", "after"):
      with before("sampling") if label == "before" else contextlib.nullcontext():
        draw = jax.jit(lambda k, z: ops.categorical(k, z))
        draw(key, logits)
      draws[label] = (lambda d: lambda: [jax.block_until_ready(d(key, logits))
                                         for _ in range(20)])(draw)
    times = common.interleaved_medians(draws, args.rounds, warmup=False)
    times = {k: {"median": v["median"] / 20} for k, v in times.items()}
    _line(f"one draw from [{case.batch}, {case.vocab}] logits (all three)", times)
  return 0


if __name__ == "__main__":
  sys.exit(main())
