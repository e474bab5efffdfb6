r"""Decoding benchmark: cached sampling vs. one IQLearn train step vs. decoding without a cache.

  python -m benchmarks decode                     # small and tiny shapes, float32 on CPU
  python -m benchmarks decode --sizes=tiny --repeats=5

For each case (same batch shape for all three measurements):
* sample: `decoding.temperature_sample` (temperature 1, no top-k/top-p), jitted, exactly
  T (`common.CASES` targets) tokens per row (EOS never stops it: every run does the same work);
* train step: `step.make_train_step` with `objectives.IQLearn()` and T5X's default optimiser
  (Adafactor), state donated, on a batch of the same shape (`common.synthetic_batch`: inputs
  L, targets T);
* no cache: the same sampler, but every step recomputes the full teacher-forced forward pass
  (`model.logits`: encoder and decoder over all T positions) and reads position i;
* no KV cache: the encoder runs once, every step reruns the decoder over all T positions.
  A baseline step costs the same at every step (static shapes), so for large cases only
  `--no_cache_steps` steps are timed and the time is scaled to T steps.

Times are medians of `--repeats` runs after one warm-up (compilation) run. Random parameters;
activations float32 by default on CPU (bfloat16 is slow there), bfloat16 on accelerators.
Printed: sampled tokens/s, the ratio sample time / train-step time (the paper measured 2.3 for
T5-base on TPU; our target is <= 1.0 for small), and the speed-up of the cache over no cache.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any, Callable

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from benchmarks import common

from irl_lm import decoding, ops
from irl_lm.models import layers
from irl_lm.experiments.timing import median_seconds
from irl_lm.training import objectives


def sample_without_cache(model: Any, params: Any, encoder_input_tokens: jax.Array,
                         rng: jax.Array, *, max_decode_length: int, num_steps: int,
                         temperature: float = 1.0, encode_once: bool = False) -> jax.Array:
  """Baseline sampler that recomputes the teacher-forced forward pass at every step.

  Args:
    model: with `logits(params, batch) -> [B, T, V]` (and, for `encode_once`, the flax module
      of `irl_lm.models.t5`).
    params: the model parameters.
    encoder_input_tokens: int32 [B, L].
    rng: PRNG key; step i draws with `fold_in(rng, i)` as `decoding.temperature_sample`.
    max_decode_length: T, the decoder length of every forward pass (static).
    num_steps: how many tokens to sample (<= T, static).
    temperature: > 0.
    encode_once: False: every step runs the full pass, encoder included (an optimisation
      barrier stops XLA from hoisting the loop-invariant encoder out of the loop); True: the
      encoder runs once and every step reruns the decoder over all T positions (no KV cache).

  Returns:
    int32 [B, T] tokens (0 after `num_steps`).
  """
  batch = encoder_input_tokens.shape[0]
  module = model.module
  if encode_once:
    encoded = module.apply({"params": params}, encoder_input_tokens, method="encode")

  def logits_fn(i, decoder_inputs):
    if not encode_once:
      enc, _ = jax.lax.optimization_barrier((encoder_input_tokens, i))
      return model.logits(params, {"encoder_input_tokens": enc,
                                   "decoder_input_tokens": decoder_inputs})

    def decode(mdl):
      embedded = mdl.token_embedder(decoder_inputs)
      self_mask = jnp.broadcast_to(layers.causal_mask(max_decode_length),
                                   (batch, 1, max_decode_length, max_decode_length))
      cross_mask = layers.make_attention_mask(jnp.ones_like(decoder_inputs, bool),
                                              encoder_input_tokens > 0)
      return mdl.decoder(embedded, encoded, self_mask, cross_mask, True)
    return nn.apply(decode, module)({"params": params})

  def body(i, tokens_BT):
    decoder_inputs = jnp.pad(tokens_BT[:, :-1], ((0, 0), (1, 0)))
    logits_BTV = logits_fn(i, decoder_inputs)
    logits_BV = jax.lax.dynamic_index_in_dim(logits_BTV, i, axis=1, keepdims=False)
    next_B = ops.categorical(jax.random.fold_in(rng, i), logits_BV / temperature)
    return jax.lax.dynamic_update_index_in_dim(tokens_BT, next_B.astype(jnp.int32), i, axis=1)

  return jax.lax.fori_loop(0, num_steps, body,
                           jnp.zeros((batch, max_decode_length), jnp.int32))


def run_case(case: common.Case, *, dtype: Any, repeats: int, no_cache_steps: int) -> dict[str, Any]:
  """Measures sampling, one IQLearn train step and no-cache sampling for one case.

  Returns:
    dict with 'sample_s', 'train_step_s', 'no_cache_s' (full pass every step), 'no_kv_cache_s'
    (encoder once, decoder rerun every step), all seconds per batch of T new tokens;
    'tokens_per_s', 'ratio' (sample / train step), 'speedup' (no_cache / sample),
    'speedup_kv' (no_kv_cache / sample), 'no_cache_steps' (steps timed for the baselines) and
    'params' (parameter count).
  """
  T = case.targets
  # T5X's default optimiser (Adafactor); the batch is `common.synthetic_batch` (state donated).
  built = common.t5_train_step(case, objectives.IQLearn(), optimizer="adafactor", dtype=dtype)
  model, params = built["model"], built["params"]
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  enc = built["batch"]["encoder_input_tokens"]
  key = jax.random.key(0)

  def one_step():
    built["run"]()

  sample = jax.jit(functools.partial(decoding.temperature_sample, model, max_decode_length=T,
                                     temperature=1.0, eos_id=-1))

  def one_sample():
    jax.block_until_ready(sample(params, enc, key))

  steps = min(no_cache_steps, T)
  times = {"sample_s": median_seconds(one_sample, repeats),
           "train_step_s": median_seconds(one_step, repeats)}
  for name, encode_once in (("no_cache_s", False), ("no_kv_cache_s", True)):
    baseline = jax.jit(functools.partial(sample_without_cache, model, max_decode_length=T,
                                         num_steps=steps, encode_once=encode_once))
    run = lambda: jax.block_until_ready(baseline(params, enc, key))  # noqa: E731
    times[name] = median_seconds(run, max(1, min(repeats, 2))) * T / steps
  return {**times, "tokens_per_s": case.batch * T / times["sample_s"],
          "ratio": times["sample_s"] / times["train_step_s"],
          "speedup": times["no_cache_s"] / times["sample_s"],
          "speedup_kv": times["no_kv_cache_s"] / times["sample_s"],
          "no_cache_steps": steps, "params": n_params}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", default="small,tiny",
                      help=f"comma-separated cases from {sorted(common.CASES)}")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up")
  parser.add_argument("--small_repeats", type=int, default=2,
                      help="timed runs for the small case (each takes seconds on a CPU)")
  parser.add_argument("--no_cache_steps", type=int, default=8,
                      help="steps timed for the no-cache baseline (scaled to all T steps)")
  parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                      help="activation dtype (auto: float32 on CPU, bfloat16 elsewhere)")
  args = parser.parse_args(argv)

  platform = jax.devices()[0].platform
  dtype_name = args.dtype if args.dtype != "auto" else (
      "float32" if platform == "cpu" else "bfloat16")
  dtype = jnp.float32 if dtype_name == "float32" else jnp.bfloat16
  print(f"jax {jax.__version__} on {jax.device_count()} {platform} device(s) "
        f"({jax.devices()[0].device_kind}); activations {dtype_name}, parameters float32; "
        f"sampling at temperature 1, no top-k/top-p; train step: IQLearn + Adafactor.")
  header = (f"{'case':5} {'B':>3} {'L':>4} {'T':>4} {'params':>6} | {'sample':>8} "
            f"{'tokens/s':>8} | {'train step':>10} {'sample/step':>11} | "
            f"{'no cache':>9} {'speed-up':>8} | {'no KV cache':>11} {'speed-up':>8}")
  print(header)
  print("-" * len(header))
  for name in args.sizes.split(","):
    case = common.CASES[name.strip()]
    repeats = args.small_repeats if case.size != "tiny" else args.repeats
    start = time.time()
    r = run_case(case, dtype=dtype, repeats=repeats, no_cache_steps=(
        args.no_cache_steps if case.size != "tiny" else case.targets))
    print(f"{case.name:5} {case.batch:>3} {case.inputs:>4} {case.targets:>4} "
          f"{r['params'] / 1e6:>5.1f}M | {r['sample_s'] * 1e3:>6.0f}ms {r['tokens_per_s']:>8.0f} | "
          f"{r['train_step_s'] * 1e3:>8.0f}ms {r['ratio']:>11.2f} | "
          f"{r['no_cache_s'] * 1e3:>7.0f}ms {r['speedup']:>7.1f}x | "
          f"{r['no_kv_cache_s'] * 1e3:>9.0f}ms {r['speedup_kv']:>7.1f}x", flush=True)
    extrapolated = "" if r["no_cache_steps"] == case.targets else (
        f"; baselines: {r['no_cache_steps']} of {case.targets} steps timed, scaled up")
    print(f"      ({time.time() - start:.0f} s; medians of {repeats} runs after a warm-up"
          f"{extrapolated})", flush=True)
  print("no cache: encoder + decoder recomputed every step; no KV cache: encoder once, decoder "
        "rerun over all T positions every step.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
