r"""Decoder-only step time by method (ratios to MLE) and sampling speed, next to T5 at the same shapes.

  python -m benchmarks decoder_only                       # the tiny CPU default's shapes
  python -m benchmarks decoder_only --rounds=10 --prompt=512 --targets=128

Shapes: gin/iqlearn_decoder_tiny.gin's (tiny decoder-only, batch 32, prompt 128, targets 32,
vocabulary 4096) unless set; the T5 1.1 tiny at the same batch, inputs and targets is the
reference. Train steps: `step.make_train_step` with AdamW (state donated) for MLE, offline IQLearn
(lambda 0.1) and online IQLearn (alpha 0.1, sampling inside the step); sampling: exactly
`targets` new tokens per row at temperature 1 (`decoding.temperature_sample`, EOS disabled).
Every program is compiled and run once, then they take turns in a new random order each round
(`common.interleaved_medians`); medians are printed.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common

from irl_lm import decoding
from irl_lm.models import decoder_only
from irl_lm.partitioning import Partitioner
from irl_lm.training import objectives, optimizers
from irl_lm.training import state as state_lib
from irl_lm.training import step as step_lib

METHODS = {"mle": objectives.MLE(), "iqlearn": objectives.IQLearn(td_weight=0.1),
           "iqlearn_online": objectives.IQLearnOnline(td_weight=0.1, online_mix=0.1)}


def _step(model, batch, shapes, objective):
  partitioner = Partitioner((-1, 1))
  schedule = optimizers.make_schedule("constant", learning_rate=1e-3)
  tx = optimizers.make_optimizer("adamw", schedule=schedule)
  layout = state_lib.build_state_layout(model, tx, partitioner, shapes, objective=objective)
  step = step_lib.make_train_step(model=model, objective=objective, tx=tx, schedule=schedule,
                                  partitioner=partitioner, shardings=layout.shardings)
  batch = {k: jax.device_put(v, partitioner.batch_sharding()) for k, v in batch.items()}
  holder = {"state": layout.init_fn()}
  params = jax.tree.map(jnp.copy, holder["state"].params)

  def run():
    holder["state"], metrics = step(holder["state"], batch)
    jax.block_until_ready(metrics)

  return run, params


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--prompt", type=int, default=128)
  parser.add_argument("--targets", type=int, default=32)
  parser.add_argument("--vocab", type=int, default=4096)
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args(argv)
  B, L, T, V = args.batch, args.prompt, args.targets, args.vocab
  dtype = common.activation_dtype()
  case = common.Case("custom", "tiny", B, L, T, V)
  t5_batch = common.synthetic_batch(case)
  model = decoder_only.DecoderOnlyModel(decoder_only.decoder_only_config(
      "tiny", vocab_size=V, activation_dtype=dtype))
  dec_batch = jax.device_get(model.teacher_forcing_batch(
      jnp.asarray(t5_batch["encoder_input_tokens"]), jnp.asarray(t5_batch["decoder_target_tokens"])))
  dec_shapes = model.input_shapes(B, {"inputs": L, "targets": T})
  t5_shapes = {"encoder_input_tokens": (B, L), "decoder_input_tokens": (B, T)}
  fns, params = {}, {}
  for name, objective in METHODS.items():
    fns[f"decoder_only/{name}"], params["decoder_only"] = _step(model, dec_batch, dec_shapes,
                                                                objective)
    fns[f"t5/{name}"], params["t5"] = _step(common.t5_model(case, dtype), t5_batch, t5_shapes,
                                            objective)
  prompts = jnp.asarray(t5_batch["encoder_input_tokens"])
  for family, fam_model in (("decoder_only", model), ("t5", common.t5_model(case, dtype))):
    sample = jax.jit(functools.partial(decoding.temperature_sample, fam_model,
                                       max_decode_length=T, temperature=1.0, eos_id=-1))
    fns[f"{family}/sample"] = functools.partial(
        lambda s, p: jax.block_until_ready(s(p, prompts, jax.random.key(0)).tokens), sample,
        params[family])
  times = common.interleaved_medians(fns, args.rounds)
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params["decoder_only"]))
  print(f"jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"{np.dtype(dtype).name}; B={B}, prompt L={L}, targets T={T}, V={V}; decoder-only tiny "
        f"{n_params / 1e6:.1f}M parameters; medians of {args.rounds} interleaved rounds")
  print(f"  {'':16} {'mle':>9} {'iqlearn':>9} {'online':>9} | {'iq/mle':>6} {'onl/mle':>7} | "
        f"{'sample':>8} {'tok/s':>7} {'sample/step':>11}")
  for family in ("decoder_only", "t5"):
    t = {name: times[f"{family}/{name}"]["median"] for name in list(METHODS) + ["sample"]}
    print(f"  {family:16} {t['mle'] * 1e3:>7.0f}ms {t['iqlearn'] * 1e3:>7.0f}ms "
          f"{t['iqlearn_online'] * 1e3:>7.0f}ms | {t['iqlearn'] / t['mle']:>6.2f} "
          f"{t['iqlearn_online'] / t['mle']:>7.2f} | {t['sample'] * 1e3:>6.0f}ms "
          f"{B * T / t['sample']:>7.0f} {t['sample'] / t['mle']:>11.2f}")
  dec, t5 = times["decoder_only/mle"]["median"], times["t5/mle"]["median"]
  print(f"  decoder-only / T5 MLE step: {dec / t5:.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
