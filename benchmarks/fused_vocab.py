r"""Before / after of the fused vocabulary reductions (`soft_q.token_statistics`), from one run.

  python benchmarks/fused_vocab.py                      # T5 1.1 small (the issue's shapes) + tiny
  python benchmarks/fused_vocab.py --cases=small --objectives=mle --rounds=9

Every loss reads the [B, T, V] logits through `soft_q.token_statistics` (V, log pi(a_t), the
entropy, argmax accuracy). 'autodiff' is how it was computed before: `logsumexp`, a one-hot
contraction for the target logit, `log_softmax` for the entropy, all differentiated by JAX,
which keeps [B, T, V] intermediates (the softmax, the one-hot product) for the backward pass.
'fused' is the current code: two forward passes over the logits and a hand-written one-pass VJP
whose only [B, T, V] residual is the logits.

For MLE and offline IQLearn (AdamW, float32): the whole train step built both ways (the old
function swapped in while the 'autodiff' step is traced), XLA's temporaries (`memory_analysis`)
and median step times over interleaved rounds, with the ratio fused / autodiff; then the same
for the loss alone (value and gradient w.r.t. random logits of the case's shape).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

from irl_lm.losses import soft_q  # noqa: E402
from irl_lm.losses.mle import mle_loss  # noqa: E402
from irl_lm.training import objectives  # noqa: E402

_FUSED = soft_q.token_statistics


def autodiff_token_statistics(logits_BTV: jax.Array, targets_BT: jax.Array
                              ) -> soft_q.TokenStatistics:
  """The pre-fusion `token_statistics`: plain jnp, differentiated by JAX."""
  z_BTV = logits_BTV.astype(jnp.float32)
  values_BT = jax.nn.logsumexp(z_BTV, axis=-1)
  onehot_BTV = jax.nn.one_hot(targets_BT, z_BTV.shape[-1], dtype=jnp.float32)
  target_logits_BT = jnp.sum(z_BTV * onehot_BTV, axis=-1)
  logp_BTV = z_BTV - values_BT[..., None]
  entropy_BT = -jnp.sum(jnp.exp(logp_BTV) * logp_BTV, axis=-1)
  correct_BT = (jnp.argmax(z_BTV, axis=-1) == targets_BT).astype(jnp.float32)
  return soft_q.TokenStatistics(values_BT, target_logits_BT, target_logits_BT - values_BT,
                                entropy_BT, correct_BT)


@contextlib.contextmanager
def using(implementation: Any) -> Iterator[None]:
  soft_q.token_statistics = implementation
  try:
    yield
  finally:
    soft_q.token_statistics = _FUSED


def _temp_mb(lowered: Any) -> float:
  return lowered.compile().memory_analysis().temp_size_in_bytes / 2**20


def _report(title: str, temps: dict[str, float], times: dict[str, dict[str, float]]) -> None:
  a, f = times["autodiff"]["median"], times["fused"]["median"]
  print(f"  {title:28} temporaries {temps['autodiff']:7.0f} -> {temps['fused']:7.0f} MB "
        f"({temps['fused'] / temps['autodiff']:.2f}x)   step {a * 1e3:7.0f} -> {f * 1e3:7.0f} ms "
        f"({f / a:.2f}x)")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default="small,tiny")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--objectives", default="mle,iqlearn")
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"float32; AdamW; medians of {args.rounds} interleaved rounds; ratio = fused / autodiff")
  impls = {"autodiff": autodiff_token_statistics, "fused": _FUSED}
  for name in args.cases.split(","):
    case = common.CASES[name]
    print(f"\n{case.name}: T5 1.1 {case.size}, B={case.batch}, L={case.inputs}, "
          f"T={case.targets}, V={case.vocab}")
    chosen = {"mle": ("MLE", objectives.MLE()),
              "iqlearn": ("IQLearn (offline)", objectives.IQLearn())}
    for label, objective in (chosen[o] for o in args.objectives.split(",")):
      built, temps = {}, {}
      for impl_name, impl in impls.items():
        with using(impl):
          b = common.t5_train_step(case, objective, optimizer="adamw")
          b["run"]()  # traced and compiled with this implementation
          with b["partitioner"].activate():
            temps[impl_name] = _temp_mb(b["lowered"]())
        built[impl_name] = b["run"]
      _report(f"train step, {label}", temps,
              common.interleaved_medians(built, args.rounds, warmup=False))

    rs = np.random.RandomState(0)
    logits = jnp.asarray(rs.randn(case.batch, case.targets, case.vocab).astype(np.float32))
    batch = common.synthetic_batch(case)
    targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
    fns, temps = {}, {}
    for impl_name, impl in impls.items():
      with using(impl):
        fn = jax.jit(jax.value_and_grad(lambda z: mle_loss(z, targets, weights,
                                                           entropy_weight=0.01)[0]))
        temps[impl_name] = _temp_mb(fn.lower(logits))
        fn(logits)
      fns[impl_name] = (lambda f: lambda: jax.block_until_ready(f(logits)))(fn)
    _report("loss + gradient (MLE+entropy)", temps,
            common.interleaved_medians(fns, args.rounds, warmup=False))
  return 0


if __name__ == "__main__":
  sys.exit(main())
